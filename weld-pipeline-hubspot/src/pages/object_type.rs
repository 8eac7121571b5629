//! The object type as URLs name it: HubSpot's own types, a custom object's `objectTypeId` and
//! its fully qualified name go in URLs as they are; a custom object's plain name is looked up
//! once in the account's schemas (`GET /crm/v3/schemas`).

use bytes::Bytes;
use weld_pipeline::{BoxError, Error};

use crate::parse::unparseable;

/// HubSpot's own object types, which URLs name as they are.
const STANDARD_TYPES: [&str; 12] = [
    "contacts",
    "companies",
    "deals",
    "tickets",
    "products",
    "line_items",
    "quotes",
    "calls",
    "emails",
    "meetings",
    "notes",
    "tasks",
];

/// Whether URLs take `object_type` as it is: a standard type, an `objectTypeId` (`2-1234567`)
/// or a custom object's fully qualified name (`p1234567_cars`). Anything else is a custom
/// object's name, looked up in the account's schemas.
pub(super) fn object_type_in_urls(object_type: &str) -> bool {
    let id = object_type.split_once('-').is_some_and(|(a, b)| {
        [a, b]
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
    });
    let qualified = object_type
        .strip_prefix('p')
        .and_then(|rest| rest.split_once('_'))
        .is_some_and(|(portal, _)| {
            !portal.is_empty() && portal.bytes().all(|b| b.is_ascii_digit())
        });
    STANDARD_TYPES.contains(&object_type) || id || qualified
}

/// The `objectTypeId` of the custom object named `name` (or so qualified) in a
/// `GET /crm/v3/schemas` answer.
pub(super) fn custom_object_id(body: &Bytes, name: &str) -> Result<String, BoxError> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Schema {
        name: String,
        object_type_id: String,
        #[serde(default)]
        fully_qualified_name: Option<String>,
    }
    #[derive(serde::Deserialize)]
    struct Schemas {
        results: Vec<Schema>,
    }
    let schemas: Schemas = serde_json::from_slice(body)
        .map_err(|e| unparseable(format!("the custom object schemas: {e}")))?;
    schemas
        .results
        .into_iter()
        .find(|s| s.name == name || s.fully_qualified_name.as_deref() == Some(name))
        .map(|s| s.object_type_id)
        .ok_or_else(|| {
            Box::new(Error::Invalid(format!(
                "no object type named {name:?} in this HubSpot account (neither a standard type \
                 nor a custom object of its schemas)"
            ))) as BoxError
        })
}
