//! What a source knows of its records' fields, told to the store: the name and type of each
//! member of a record's `properties` object, as the source system defines them (HubSpot's
//! property definitions). A store that can use it does: the PostgreSQL store builds a view that
//! casts each property to its type. The records themselves keep every value as the source sent
//! it.
//!
//! The runtime hands a source its stream's catalog in [`RunContext::catalog`]: on a worker, the
//! controller's store, told over the transport ([`Request::Describe`](crate::Request)); in one
//! process, the store itself (every [`StreamStore`](crate::store::StreamStore) is one, and so is a
//! [`MemorySink`](crate::MemorySink)). A source describes its stream when it learns the fields,
//! typically once per run; describing the same schema again changes nothing.

use async_trait::async_trait;

use crate::error::Error;
use crate::stream::StreamName;

#[cfg(doc)]
use super::RunContext;

/// The type of a field, as its values are to be read. Values still arrive as the source sent
/// them (HubSpot sends every property as a string); a value that does not read as its type is
/// read as nothing, never as an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FieldKind {
    /// Text, kept as it is (also phone numbers and single-choice enumerations).
    Text,
    /// A decimal number.
    Number,
    /// `true` or `false`.
    Boolean,
    /// A calendar date: `2024-05-01`, or milliseconds since the epoch at midnight UTC.
    Date,
    /// An instant: RFC 3339, or milliseconds since the epoch.
    DateTime,
    /// Several values in one, separated by `;` (a multiple-choice enumeration).
    List,
}

impl FieldKind {
    /// Every kind, in the order of their codes.
    pub const ALL: [FieldKind; 6] = [
        FieldKind::Text,
        FieldKind::Number,
        FieldKind::Boolean,
        FieldKind::Date,
        FieldKind::DateTime,
        FieldKind::List,
    ];

    /// Its code in the wire encoding.
    pub fn code(self) -> u8 {
        match self {
            FieldKind::Text => 0,
            FieldKind::Number => 1,
            FieldKind::Boolean => 2,
            FieldKind::Date => 3,
            FieldKind::DateTime => 4,
            FieldKind::List => 5,
        }
    }

    /// The kind of a wire code, `None` for a code this build does not know.
    pub fn from_code(code: u8) -> Option<Self> {
        FieldKind::ALL.get(usize::from(code)).copied()
    }
}

/// One field: a member of a record's `properties` object.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Field {
    /// The member's name.
    pub name: String,
    /// How its values read.
    pub kind: FieldKind,
}

/// The fields of a stream's records, in the order a store should show them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Schema {
    /// The fields.
    pub fields: Vec<Field>,
}

impl Schema {
    /// The schema of `fields`, sorted by name, a repeated name kept once (its first kind).
    pub fn new(fields: impl IntoIterator<Item = Field>) -> Self {
        let mut fields: Vec<Field> = fields.into_iter().collect();
        fields.sort_by(|a, b| a.name.cmp(&b.name));
        fields.dedup_by(|b, a| a.name == b.name);
        Schema { fields }
    }
}

/// Where a source describes its stream's fields.
#[async_trait]
pub trait Catalog: Send + Sync + std::fmt::Debug + 'static {
    /// Tells the store that `stream`'s records have the fields of `schema`. Describing again
    /// replaces the schema; describing the same one again changes nothing.
    ///
    /// # Errors
    ///
    /// When the store cannot be reached (transient) or cannot use the schema. A source logs the
    /// error and goes on: its records do not depend on it.
    async fn describe(&self, stream: &StreamName, schema: &Schema) -> Result<(), Error>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_schema_is_sorted_by_name_without_repeats() {
        let field = |name: &str, kind| Field {
            name: name.into(),
            kind,
        };
        let schema = Schema::new([
            field("b", FieldKind::Number),
            field("a", FieldKind::Text),
            field("b", FieldKind::Date),
        ]);
        assert_eq!(
            schema.fields,
            [field("a", FieldKind::Text), field("b", FieldKind::Number)]
        );
    }

    #[test]
    fn every_kind_has_its_own_code() {
        for kind in FieldKind::ALL {
            assert_eq!(FieldKind::from_code(kind.code()), Some(kind));
        }
        assert_eq!(FieldKind::from_code(6), None);
    }
}
