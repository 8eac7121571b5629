//! The properties a run asks for: the stream's own list, or every property the account defines
//! for the object, discovered through `GET /crm/v3/properties/{objectType}` at the start of
//! each run (custom ones included: that is where a customer's own data lives).
//!
//! Each position of a sync carries the [fingerprint](PropertySet::fingerprint) of the set its
//! records were read with. When a run finds another set (a property added or removed in the
//! portal, or the stream's list changed), the records stored lack the new properties and no
//! incremental window would bring them (a new property does not move a record's modification
//! time), so the run starts a full sync instead: every record is read again with the new set
//! and upserted over the old one. Nothing stored is dropped first.
//!
//! The definitions also say which properties HubSpot computes (`calculated: true`: rollups,
//! "days to close", time in a stage, a portal's calculation properties). HubSpot recomputes
//! them without moving the record's modification time, so no incremental window sees the new
//! value: a set that reads one is [`calculated`](PropertySet::calculated), and its stream reads
//! every record again once per [`HubSpotObject::refresh`](crate::HubSpotObject::refresh).

use std::collections::HashSet;
use std::sync::Arc;

use bytes::Bytes;
use serde::Deserialize;
use weld_pipeline::source::{Field, FieldKind, Schema};
use weld_pipeline::{BoxError, Error};

use super::parse::unparseable;

/// The properties of a run, sorted, with their fingerprint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PropertySet {
    names: Arc<Vec<String>>,
    fingerprint: u64,
    /// Whether one of them is calculated by HubSpot (not part of the fingerprint: it changes
    /// no record already read).
    calculated: bool,
}

impl PropertySet {
    /// The set of `names`, sorted and without repeats.
    pub(crate) fn new(mut names: Vec<String>) -> Self {
        names.sort();
        names.dedup();
        PropertySet {
            fingerprint: fingerprint(&names),
            names: Arc::new(names),
            calculated: false,
        }
    }

    /// The same set, one of its properties calculated by HubSpot or not.
    pub(crate) fn with_calculated(mut self, calculated: bool) -> Self {
        self.calculated = calculated;
        self
    }

    /// Whether one of the properties is calculated by HubSpot: its value changes without moving
    /// the record's modification time.
    pub(crate) fn calculated(&self) -> bool {
        self.calculated
    }

    /// The names.
    pub(crate) fn names(&self) -> &[String] {
        &self.names
    }

    /// A hash of the names, the same in every process and release (64-bit FNV-1a over the
    /// sorted names, each followed by a comma); never 0, which marks a position from before
    /// properties were discovered.
    pub(crate) fn fingerprint(&self) -> u64 {
        self.fingerprint
    }

    /// The fingerprint of the set read with links to `associations`: the set's own when there
    /// are none (so a stream without associations keeps its checkpoints), else one over the
    /// names and the types (each as `->type`, sorted), so a changed list backfills too.
    pub(crate) fn fingerprint_with(&self, associations: &[String]) -> u64 {
        if associations.is_empty() {
            return self.fingerprint();
        }
        let mut types: Vec<String> = associations.iter().map(|t| format!("->{t}")).collect();
        types.sort();
        types.dedup();
        let names: Vec<String> = self.names.iter().cloned().chain(types).collect();
        fingerprint(&names)
    }
}

fn fingerprint(names: &[String]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut hash = OFFSET;
    for byte in names.iter().flat_map(|n| n.bytes().chain([b','])) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(PRIME);
    }
    hash.max(1)
}

#[derive(Deserialize)]
struct Answer {
    results: Vec<Definition>,
}

/// The object's property definitions as a run uses them: each property with its type, and
/// which HubSpot calculates.
#[derive(Clone, Debug)]
pub(crate) struct Defined {
    /// Every property, with its type.
    pub(crate) schema: Schema,
    /// The names of the calculated ones (`calculated: true`).
    pub(crate) calculated: HashSet<String>,
}

impl Defined {
    /// Whether one of `names` is calculated.
    pub(crate) fn any_calculated(&self, names: &[String]) -> bool {
        names.iter().any(|name| self.calculated.contains(name))
    }
}

#[derive(Deserialize)]
struct Definition {
    name: String,
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(rename = "fieldType", default)]
    field_type: Option<String>,
    /// Whether HubSpot computes the value (absent: no).
    #[serde(default)]
    calculated: bool,
}

impl Definition {
    /// How the property's values read: HubSpot's `type`, with a multiple-choice enumeration
    /// (`fieldType` `checkbox`, values joined by `;`) as a list. A type this build does not
    /// know reads as text.
    fn field(self) -> Field {
        let kind = match (self.kind.as_deref(), self.field_type.as_deref()) {
            (Some("number"), _) => FieldKind::Number,
            (Some("bool"), _) => FieldKind::Boolean,
            (Some("date"), _) => FieldKind::Date,
            (Some("datetime"), _) => FieldKind::DateTime,
            (Some("enumeration"), Some("checkbox")) => FieldKind::List,
            _ => FieldKind::Text,
        };
        Field {
            name: self.name,
            kind,
        }
    }
}

/// The properties of a `GET /crm/v3/properties/{objectType}` answer, each with its type, and
/// the calculated ones; at most `max` of them (see
/// [`HubSpotAccount::max_properties`](super::HubSpotAccount::max_properties)).
pub(super) fn parse_definitions(
    body: &Bytes,
    object_type: &str,
    max: usize,
) -> Result<Defined, BoxError> {
    let definitions: Answer = serde_json::from_slice(body)
        .map_err(|e| unparseable(format!("the property definitions: {e}")))?;
    if definitions.results.is_empty() {
        return Err(unparseable("the object type defines no properties"));
    }
    if definitions.results.len() > max {
        return Err(Box::new(Error::Invalid(format!(
            "{object_type} defines {} properties, more than the {max} a stream reads by discovery \
             (HUBSPOT_MAX_PROPERTIES): list the ones to read in the stream's `properties`",
            definitions.results.len()
        ))));
    }
    let calculated = definitions
        .results
        .iter()
        .filter(|d| d.calculated)
        .map(|d| d.name.clone())
        .collect();
    Ok(Defined {
        schema: Schema::new(definitions.results.into_iter().map(Definition::field)),
        calculated,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fingerprint_is_of_the_set_not_its_order_and_is_stable() {
        let a = PropertySet::new(vec!["email".into(), "firstname".into()]);
        let b = PropertySet::new(vec!["firstname".into(), "email".into(), "email".into()]);
        assert_eq!(a, b);
        assert_ne!(
            a.fingerprint(),
            PropertySet::new(vec!["email".into()]).fingerprint()
        );
        // Written into checkpoints: it must not change between releases.
        assert_eq!(a.fingerprint(), 0x0421_8859_4d4d_0a7e);
    }

    #[test]
    fn definitions_parse_to_their_names_and_types_and_an_empty_list_is_refused() {
        let body = Bytes::from_static(
            br#"{"results":[
                {"name":"email","type":"string","fieldType":"text","options":[]},
                {"name":"custom_1"},
                {"name":"amount","type":"number","fieldType":"number","calculated":false},
                {"name":"days_to_close","type":"number","fieldType":"number","calculated":true},
                {"name":"closedate","type":"datetime","fieldType":"date"},
                {"name":"birthday","type":"date","fieldType":"date"},
                {"name":"opted_in","type":"bool","fieldType":"booleancheckbox"},
                {"name":"colours","type":"enumeration","fieldType":"checkbox"},
                {"name":"stage","type":"enumeration","fieldType":"select"},
                {"name":"phone","type":"phone_number","fieldType":"phonenumber"},
                {"name":"later","type":"object_coordinates","fieldType":"text"}
            ]}"#,
        );
        let defined = parse_definitions(&body, "contacts", 11).unwrap();
        assert_eq!(
            defined.calculated,
            HashSet::from(["days_to_close".to_string()])
        );
        assert!(defined.any_calculated(&["email".into(), "days_to_close".into()]));
        assert!(!defined.any_calculated(&["email".into(), "amount".into()]));
        let kinds: Vec<(String, FieldKind)> = defined
            .schema
            .fields
            .into_iter()
            .map(|f| (f.name, f.kind))
            .collect();
        let expected = [
            ("amount", FieldKind::Number),
            ("birthday", FieldKind::Date),
            ("closedate", FieldKind::DateTime),
            ("colours", FieldKind::List),
            ("custom_1", FieldKind::Text),
            ("days_to_close", FieldKind::Number),
            ("email", FieldKind::Text),
            ("later", FieldKind::Text),
            ("opted_in", FieldKind::Boolean),
            ("phone", FieldKind::Text),
            ("stage", FieldKind::Text),
        ];
        assert_eq!(
            kinds,
            expected
                .iter()
                .map(|(n, k)| (n.to_string(), *k))
                .collect::<Vec<_>>()
        );
        let too_many = parse_definitions(&body, "contacts", 10).unwrap_err();
        assert!(
            too_many
                .to_string()
                .contains("contacts defines 11 properties, more than the 10"),
            "{too_many}"
        );
        let empty = Bytes::from_static(br#"{"results":[]}"#);
        assert!(parse_definitions(&empty, "contacts", 11).is_err());
        assert!(parse_definitions(&Bytes::from_static(b"<html>"), "contacts", 11).is_err());
    }
}
