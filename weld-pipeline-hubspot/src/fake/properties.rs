//! Property definitions, as `GET /crm/v3/properties/{objectType}` and
//! `GET /crm/properties/2026-03/{objectType}` list them: a realistic
//! portal's, HubSpot's own (`hubspotDefined: true`) and the customer's custom ones, of every
//! type, with values on a share of the records.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, Uri};
use axum::response::Response;
use serde::Serialize;

use super::admission::{admit, unknown_object};
use super::data::CUSTOM_OBJECT_TYPE_ID;
use super::definitions::Definition;
use super::versions::Served;
use super::wire::{iso, Built};
use super::{answer, Fake, Refusal, Shared};

#[derive(Serialize)]
struct Definitions<'a> {
    results: &'a [Definition],
}

pub(super) async fn properties_route(
    State(state): State<Shared>,
    axum::Extension(served): axum::Extension<Served>,
    Path(object): Path<String>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    answer(&state, |fake| {
        build(fake, served, &object, &uri.to_string(), &headers)
    })
    .await
}

fn build(
    fake: &mut Fake,
    served: Served,
    object: &str,
    uri: &str,
    headers: &HeaderMap,
) -> Result<Built, Refusal> {
    let (fault, limit_headers) = admit(fake, served, headers, uri, object, false)?;
    let Some(set) = fake.objects.get(super::canonical(object)) else {
        return Err(unknown_object(fake, served, object));
    };
    let body = serde_json::to_vec(&Definitions {
        results: &set.definitions,
    })
    .unwrap_or_default();
    Ok((body, 0, fault, limit_headers))
}

/// The portal's custom object as `GET /crm/v3/schemas` (and `/crm-object-schemas/{v3,2026-03}/schemas`)
/// describes it, with every field HubSpot's 2026-03 SDK requires.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Schema<'a> {
    id: &'static str,
    name: &'static str,
    object_type_id: &'static str,
    fully_qualified_name: &'static str,
    labels: serde_json::Value,
    primary_display_property: &'static str,
    required_properties: [&'static str; 1],
    searchable_properties: [&'static str; 2],
    secondary_display_properties: [&'static str; 1],
    allows_sensitive_properties: bool,
    properties: &'a [Definition],
    associations: [(); 0],
    archived: bool,
    created_at: String,
    updated_at: String,
}

/// The custom object's name and its fully qualified name, which HubSpot takes in URLs as well
/// as its `objectTypeId`.
pub(crate) const CUSTOM_OBJECT_NAMES: [&str; 2] = ["cars", "p1234567_cars"];

pub(super) async fn schemas_route(
    State(state): State<Shared>,
    axum::Extension(served): axum::Extension<Served>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    answer(&state, |fake| {
        schemas(fake, served, &uri.to_string(), &headers)
    })
    .await
}

fn schemas(
    fake: &mut Fake,
    served: Served,
    uri: &str,
    headers: &HeaderMap,
) -> Result<Built, Refusal> {
    let (fault, limit_headers) = admit(fake, served, headers, uri, "schemas", false)?;
    let at = iso(weld_pipeline::Timestamp::now().as_millis() - 300 * 86_400_000);
    let results: Vec<Schema<'_>> = fake
        .objects
        .get(CUSTOM_OBJECT_TYPE_ID)
        .map(|set| Schema {
            id: "1234567",
            name: CUSTOM_OBJECT_NAMES[0],
            object_type_id: CUSTOM_OBJECT_TYPE_ID,
            fully_qualified_name: CUSTOM_OBJECT_NAMES[1],
            labels: serde_json::json!({"singular": "Car", "plural": "Cars"}),
            primary_display_property: "model",
            required_properties: ["model"],
            searchable_properties: ["model", "make"],
            secondary_display_properties: ["make"],
            allows_sensitive_properties: false,
            properties: &set.definitions,
            associations: [],
            archived: false,
            created_at: at.clone(),
            updated_at: at.clone(),
        })
        .into_iter()
        .collect();
    let body = serde_json::to_vec(&serde_json::json!({ "results": results })).unwrap_or_default();
    Ok((body, 0, fault, limit_headers))
}
