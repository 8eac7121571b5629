//! Transforms of fields inside a record's JSON, configurable as data.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::Transform;
use crate::error::Error;
use crate::record::{Json, Record};

/// One change to a field inside a record's JSON, addressed by a JSON Pointer (RFC 6901,
/// `/properties/email`). A stream's configuration carries a list of them, applied in order with
/// one parse and one write per record.
///
/// A pointer to a field that is absent changes nothing: HubSpot leaves out properties it does
/// not know, and a transform must not fail a run for that.
///
/// ```
/// use weld_pipeline::transform::FieldTransform;
///
/// let config = r#"[{"rename":{"from":"/properties/email","to":"/properties/mail"}},
///                  {"drop":"/properties/notes"},
///                  {"redact":"/properties/phone"}]"#;
/// let transforms: Vec<FieldTransform> = serde_json::from_str(config).unwrap();
/// assert_eq!(transforms.len(), 3);
/// ```
///
/// Every pointer must start with `/`; a list with any other is refused when it is deserialized
/// (and fails the run if built in code), since a redaction that silently matched nothing would
/// leak what it was meant to hide.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", try_from = "Unchecked")]
pub enum FieldTransform {
    /// Moves a field. The destination's parent must be an object; an existing value there is
    /// replaced.
    Rename {
        /// Where the value is.
        from: String,
        /// Where it goes.
        to: String,
    },
    /// Removes a field.
    Drop(String),
    /// Replaces a field's value with the string `"[redacted]"`, keeping the field so that
    /// consumers see it existed.
    Redact(String),
}

/// [`FieldTransform`] as written, before its pointers are checked. A key it does not know is
/// refused: a misspelt `form` would otherwise rename nothing, silently.
#[derive(Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
enum Unchecked {
    Rename { from: String, to: String },
    Drop(String),
    Redact(String),
}

impl TryFrom<Unchecked> for FieldTransform {
    type Error = Error;

    fn try_from(unchecked: Unchecked) -> Result<Self, Error> {
        let transform = match unchecked {
            Unchecked::Rename { from, to } => FieldTransform::Rename { from, to },
            Unchecked::Drop(field) => FieldTransform::Drop(field),
            Unchecked::Redact(field) => FieldTransform::Redact(field),
        };
        transform.check()?;
        Ok(transform)
    }
}

/// The value a redacted field gets.
pub const REDACTED: &str = "[redacted]";

fn check_pointer(pointer: &str) -> Result<(), Error> {
    if pointer.starts_with('/') {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "{pointer:?} is not a JSON pointer to a field (no leading /)"
        )))
    }
}

fn split_parent(pointer: &str) -> Result<(&str, String), Error> {
    check_pointer(pointer)?;
    let (parent, last) = pointer.rsplit_once('/').ok_or_else(|| {
        Error::Invalid(format!("{pointer:?} is not a JSON pointer (no leading /)"))
    })?;
    // RFC 6901 escapes: ~1 is '/', ~0 is '~' (in that order).
    Ok((parent, last.replace("~1", "/").replace("~0", "~")))
}

fn take(document: &mut Value, pointer: &str) -> Result<Option<Value>, Error> {
    let (parent, key) = split_parent(pointer)?;
    Ok(match document.pointer_mut(parent) {
        Some(Value::Object(map)) => map.remove(&key),
        _ => None,
    })
}

impl FieldTransform {
    /// Checks that every pointer of the transform addresses a field.
    ///
    /// # Errors
    ///
    /// [`Error::Invalid`] naming the pointer that does not start with `/`.
    pub fn check(&self) -> Result<(), Error> {
        match self {
            FieldTransform::Rename { from, to } => {
                check_pointer(from)?;
                check_pointer(to)
            }
            FieldTransform::Drop(field) | FieldTransform::Redact(field) => check_pointer(field),
        }
    }

    fn apply_to(&self, document: &mut Value) -> Result<(), Error> {
        match self {
            FieldTransform::Rename { from, to } => {
                if let Some(value) = take(document, from)? {
                    let (parent, key) = split_parent(to)?;
                    match document.pointer_mut(parent) {
                        Some(Value::Object(map)) => {
                            map.insert(key, value);
                        }
                        _ => {
                            return Err(Error::Invalid(format!(
                                "cannot rename to {to:?}: its parent is not an object"
                            )))
                        }
                    }
                }
            }
            FieldTransform::Drop(field) => {
                take(document, field)?;
            }
            FieldTransform::Redact(field) => {
                check_pointer(field)?;
                if let Some(value) = document.pointer_mut(field) {
                    *value = Value::String(REDACTED.into());
                }
            }
        }
        Ok(())
    }
}

impl Transform for Vec<FieldTransform> {
    fn apply(&self, mut record: Record) -> Result<Option<Record>, Error> {
        if self.is_empty() {
            return Ok(Some(record));
        }
        let mut document: Value = record.data.decode()?;
        for transform in self {
            transform.apply_to(&mut document)?;
        }
        record.data = Json::from_serialize(&document)?;
        Ok(Some(record))
    }
}
