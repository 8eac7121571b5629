//! Reference data: owners (`GET /crm/v3/owners` and `GET /crm/owners/2026-03`, paged,
//! `archived=true` for deactivated ones) and pipelines with their stages
//! (`GET /crm/v3/pipelines/{objectType}` and `GET /crm/pipelines/2026-03/{objectType}`, deals
//! and tickets), in HubSpot's shapes. The answers are the same on both families: owners carry
//! `type` and `userIdIncludingInactive`, stages `writePermissions`, as HubSpot sends them on v3
//! too (HubSpot's 2026-03 SDK requires `type` and `writePermissions`).

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;
use serde::Serialize;
use serde_json::json;

use super::admission::{admit, error, unknown_object};
use super::versions::Served;
use super::wire::{iso, Built};
use super::{answer, canonical, Fake, Refusal, Shared};

/// One owner, as HubSpot lists it.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Owner {
    pub(crate) id: String,
    email: String,
    first_name: String,
    last_name: String,
    /// `PERSON` for a user; HubSpot's other kind, `QUEUE`, the fake does not generate.
    #[serde(rename = "type")]
    kind: &'static str,
    /// The user's id, still given once deactivated (when `userId` is not: see [`owners`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    user_id: Option<u64>,
    user_id_including_inactive: u64,
    created_at: String,
    updated_at: String,
    pub(crate) archived: bool,
    teams: Vec<serde_json::Value>,
}

/// The portal's owners: `count` active, and a few deactivated (archived).
pub(crate) fn owners(count: usize, now: i64) -> Vec<Owner> {
    let names = ["Lorelai", "Luke", "Sookie", "Michel", "Paris", "Kirk"];
    (0..count + 3)
        .map(|i| {
            let first = names[i % names.len()];
            Owner {
                id: (100_000 + i).to_string(),
                email: format!("{}.{i}@example.com", first.to_lowercase()),
                first_name: first.to_string(),
                last_name: format!("Owner{i}"),
                kind: "PERSON",
                // A deactivated user keeps only `userIdIncludingInactive`, as HubSpot answers.
                user_id: (i < count).then_some(9_000_000 + i as u64),
                user_id_including_inactive: 9_000_000 + i as u64,
                created_at: iso(now - 500 * 86_400_000),
                updated_at: iso(now - (i as i64 + 1) * 86_400_000),
                archived: i >= count,
                teams: if i % 2 == 0 {
                    vec![json!({"id": "77", "name": "Sales", "primary": true})]
                } else {
                    vec![]
                },
            }
        })
        .collect()
}

/// The pipelines of `object_type` (deals or tickets), two of each with their stages.
pub(crate) fn pipelines(object_type: &str, now: i64) -> Vec<serde_json::Value> {
    let stages: &[(&str, &str)] = if object_type == "deals" {
        &[
            ("appointmentscheduled", "Appointment scheduled"),
            ("qualifiedtobuy", "Qualified to buy"),
            ("closedwon", "Closed won"),
            ("closedlost", "Closed lost"),
        ]
    } else {
        &[("1", "New"), ("2", "Waiting on contact"), ("4", "Closed")]
    };
    ["default", "renewals"]
        .iter()
        .enumerate()
        .map(|(p, pipeline)| {
            let at = iso(now - (p as i64 + 10) * 86_400_000);
            let stages: Vec<_> = stages
                .iter()
                .enumerate()
                .map(|(order, (id, label))| {
                    let id = if p == 0 {
                        id.to_string()
                    } else {
                        format!("{pipeline}-{id}")
                    };
                    json!({"id": id, "label": label, "displayOrder": order,
                           "metadata": {"isClosed": label.starts_with("Closed").to_string()},
                           "writePermissions": "CRM_PERMISSIONS_ENFORCEMENT",
                           "archived": false, "createdAt": at, "updatedAt": at})
                })
                .collect();
            json!({"id": pipeline, "label": format!("{} pipeline", pipeline), "displayOrder": p,
                   "archived": false, "stages": stages, "createdAt": at, "updatedAt": at})
        })
        .collect()
}

#[derive(serde::Deserialize)]
pub(super) struct OwnersQuery {
    limit: Option<usize>,
    after: Option<String>,
    archived: Option<String>,
}

pub(super) async fn owners_route(
    State(state): State<Shared>,
    axum::Extension(served): axum::Extension<Served>,
    uri: Uri,
    headers: HeaderMap,
    Query(query): Query<OwnersQuery>,
) -> Response {
    answer(&state, |fake| {
        owners_page(fake, served, &uri.to_string(), &headers, &query)
    })
    .await
}

fn owners_page(
    fake: &mut Fake,
    served: Served,
    uri: &str,
    headers: &HeaderMap,
    query: &OwnersQuery,
) -> Result<Built, Refusal> {
    let (fault, limit_headers) = admit(fake, served, headers, uri, "owners", false)?;
    let limit = query.limit.unwrap_or(100);
    if !(1..=500).contains(&limit) {
        return Err(error(
            fake,
            served,
            StatusCode::BAD_REQUEST,
            "VALIDATION_ERROR",
            "limit must be between 1 and 500",
        ));
    }
    let archived = query
        .archived
        .as_deref()
        .is_some_and(|a| a.eq_ignore_ascii_case("true"));
    let start: usize = query
        .after
        .as_deref()
        .and_then(|a| a.parse().ok())
        .unwrap_or(0);
    let matching: Vec<&Owner> = fake
        .owners
        .iter()
        .filter(|o| o.archived == archived)
        .collect();
    let page: Vec<&&Owner> = matching.iter().skip(start).take(limit).collect();
    let next = (start + limit < matching.len()).then(|| (start + limit).to_string());
    let mut body = json!({ "results": page });
    if let Some(after) = next {
        // HubSpot's v3 links end the path with a slash.
        let owners = match served {
            Served::Legacy => "/crm/v3/owners/".to_string(),
            Served::Dated(_) => served.routes().owners,
        };
        body["paging"] = json!({"next": {"after": after,
            "link": Served::link(&owners, "", &after)}});
    }
    let records = page.len() as u64;
    Ok((body.to_string().into_bytes(), records, fault, limit_headers))
}

pub(super) async fn pipelines_route(
    State(state): State<Shared>,
    axum::Extension(served): axum::Extension<Served>,
    Path(object): Path<String>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    answer(&state, |fake| {
        pipelines_answer(fake, served, &object, &uri.to_string(), &headers)
    })
    .await
}

fn pipelines_answer(
    fake: &mut Fake,
    served: Served,
    object: &str,
    uri: &str,
    headers: &HeaderMap,
) -> Result<Built, Refusal> {
    let (fault, limit_headers) = admit(fake, served, headers, uri, object, false)?;
    let Some(pipelines) = fake.pipelines.get(canonical(object)) else {
        return Err(unknown_object(fake, served, object));
    };
    let records = pipelines.len() as u64;
    let body = json!({ "results": pipelines }).to_string().into_bytes();
    Ok((body, records, fault, limit_headers))
}
