//! The portal's property definitions: HubSpot's own properties and the customer's custom ones,
//! of every type, and the values the data set gives the custom ones.
//!
//! Some are calculated (`calculated: true`): HubSpot recomputes their values without moving the
//! record's modification time, which `Mutation::recalculate` plays. HubSpot's own calculated
//! properties named in [`CALCULATED`] are marked so wherever a type defines them, and the
//! customer's custom property [`CALCULATED_CUSTOM`] (a number, as a portal's "days to close"
//! calculation property is) is one: any portal with two custom properties or more has one.

use serde::Serialize;

use super::wire::iso;

/// HubSpot's property types with the field type of each; values always travel as strings.
/// An enumeration shown as checkboxes holds several options at once, joined by `;`.
const TYPES: [(&str, &str); 8] = [
    ("string", "text"),
    ("number", "number"),
    ("date", "date"),
    ("datetime", "date"),
    ("enumeration", "select"),
    ("bool", "booleancheckbox"),
    ("phone_number", "phonenumber"),
    ("enumeration", "checkbox"),
];

/// HubSpot's own properties whose values HubSpot computes: stage times (back-filled for every
/// stage) and a deal's days to close.
const CALCULATED: &[&str] = &[
    "days_to_close",
    "hs_v2_date_entered_current_stage",
    "hs_v2_time_in_current_stage",
    "hs_time_in_lead",
    "num_associated_deals",
];

/// The index of the custom property that is calculated: `custom_property_001`, a number.
pub(crate) const CALCULATED_CUSTOM: usize = 1;

/// The options of every enumeration the fake defines.
const OPTIONS: [&str; 3] = ["option_a", "option_b", "option_c"];

/// One property's definition.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Definition {
    pub(crate) name: String,
    label: String,
    #[serde(rename = "type")]
    kind: &'static str,
    field_type: &'static str,
    group_name: &'static str,
    description: String,
    options: Vec<PropertyOption>,
    calculated: bool,
    has_unique_value: bool,
    hidden: bool,
    /// Present (true) on HubSpot's own properties only, as HubSpot writes it.
    #[serde(skip_serializing_if = "Option::is_none")]
    hubspot_defined: Option<bool>,
    created_at: String,
    updated_at: String,
    archived: bool,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct PropertyOption {
    label: String,
    value: &'static str,
    display_order: usize,
    hidden: bool,
}

impl Definition {
    /// A definition of `kind` shown as `field_type` (one of [`TYPES`]).
    fn new(
        name: &str,
        (kind, field_type): (&'static str, &'static str),
        hubspot_defined: bool,
        at: i64,
    ) -> Self {
        let options = if kind == "enumeration" {
            OPTIONS
                .iter()
                .enumerate()
                .map(|(i, value)| PropertyOption {
                    label: value.replace('_', " "),
                    value,
                    display_order: i,
                    hidden: false,
                })
                .collect()
        } else {
            vec![]
        };
        Definition {
            name: name.to_string(),
            label: name.replace('_', " "),
            kind,
            field_type,
            group_name: if hubspot_defined {
                "contactinformation"
            } else {
                "custom"
            },
            description: String::new(),
            options,
            calculated: false,
            has_unique_value: name == "hs_object_id",
            hidden: false,
            hubspot_defined: hubspot_defined.then_some(true),
            created_at: iso(at),
            updated_at: iso(at),
            archived: false,
        }
    }

    /// Whether HubSpot computes this property's values.
    pub(crate) fn is_calculated(&self) -> bool {
        self.calculated
    }

    /// HubSpot's own property `name`, typed as HubSpot types it.
    pub(crate) fn standard(name: &str, at: i64) -> Self {
        let kind = match name {
            "createdate"
            | "lastmodifieddate"
            | "hs_lastmodifieddate"
            | "closedate"
            | "hs_v2_date_entered_current_stage" => "datetime",
            "hs_object_id"
            | "amount"
            | "days_to_close"
            | "hs_v2_time_in_current_stage"
            | "hs_time_in_lead"
            | "num_associated_deals" => "number",
            "lifecyclestage" | "dealstage" | "pipeline" => "enumeration",
            "phone" => "phone_number",
            _ => "string",
        };
        let typed = TYPES
            .into_iter()
            .find(|(k, _)| *k == kind)
            .unwrap_or(TYPES[0]);
        Definition {
            calculated: CALCULATED.contains(&name),
            ..Definition::new(name, typed, true, at)
        }
    }

    /// The customer's custom property number `index` (`custom_property_007`), its type
    /// cycling through every type.
    pub(crate) fn custom(index: usize, at: i64) -> Self {
        Definition {
            calculated: index == CALCULATED_CUSTOM,
            ..Definition::new(
                &format!("custom_property_{index:03}"),
                TYPES[index % TYPES.len()],
                false,
                at,
            )
        }
    }

    /// A custom string property added at run time.
    pub(crate) fn added(name: &str, at: i64) -> Self {
        Definition::new(name, TYPES[0], false, at)
    }

    /// The value record `id` has for custom property `index`, if it has one: about a quarter of
    /// the records do, each value in its type's format.
    pub(crate) fn custom_value(index: usize, id: u64) -> Option<String> {
        if (id as usize * 31 + index * 17) % 4 != 0 {
            return None;
        }
        let n = id as usize * (index + 3);
        Some(match TYPES[index % TYPES.len()] {
            ("number", _) => (n % 100_000).to_string(),
            ("date", _) => format!("2024-{:02}-{:02}", n % 12 + 1, n % 28 + 1),
            ("datetime", _) => iso(1_700_000_000_000 + (n as i64 % 1_000_000) * 60_000),
            ("enumeration", "checkbox") => OPTIONS
                .iter()
                .enumerate()
                .filter(|(i, _)| (n >> i) & 1 == 1)
                .map(|(_, o)| *o)
                .collect::<Vec<_>>()
                .join(";"),
            ("enumeration", _) => OPTIONS[n % OPTIONS.len()].to_string(),
            ("bool", _) => (n % 2 == 0).to_string(),
            ("phone_number", _) => format!("+1 555 {:04}", n % 10_000),
            _ => format!("value {index}-{id}"),
        })
    }
}
