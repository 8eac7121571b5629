//! The list endpoint: paging by `after`, properties, archived records.

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;

use super::admission::{admit, error, unknown_object};
use super::data::Answer;
use super::versions::Served;
use super::wire::{Built, Listing, Next, Paging};
use super::{answer, Fake, Refusal, Shared};

/// The query of a list, and of a get of one record (which reads `properties` and `archived`).
#[derive(Default)]
pub(super) struct ListQuery {
    limit: Option<String>,
    after: Option<String>,
    pub(super) properties: Option<String>,
    archived: Option<String>,
}

impl ListQuery {
    /// HubSpot takes `properties` comma-separated, repeated (as its SDKs send it), or both.
    pub(super) fn from_pairs(pairs: Vec<(String, String)>) -> Self {
        let mut query = ListQuery::default();
        let mut properties: Vec<String> = Vec::new();
        for (key, value) in pairs {
            match key.as_str() {
                "limit" => query.limit = Some(value),
                "after" => query.after = Some(value),
                "archived" => query.archived = Some(value),
                "properties" => properties.extend(
                    value
                        .split(',')
                        .filter(|p| !p.is_empty())
                        .map(str::to_string),
                ),
                _ => {}
            }
        }
        if !properties.is_empty() {
            query.properties = Some(properties.join(","));
        }
        query
    }

    /// Whether archived records are asked for. Booleans are read as HubSpot reads them,
    /// case-insensitively (its Python SDK sends `True`).
    pub(super) fn archived(&self) -> bool {
        self.archived
            .as_deref()
            .is_some_and(|a| a.eq_ignore_ascii_case("true"))
    }
}

pub(super) async fn list(
    State(state): State<Shared>,
    axum::Extension(served): axum::Extension<Served>,
    Path(object): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Response {
    let query = ListQuery::from_pairs(pairs);
    answer(&state, |fake| {
        build_list(fake, served, &object, &uri.to_string(), &headers, &query)
    })
    .await
}

fn build_list(
    fake: &mut Fake,
    served: Served,
    object: &str,
    uri: &str,
    headers: &HeaderMap,
    query: &ListQuery,
) -> Result<Built, Refusal> {
    let (fault, limit_headers) = admit(fake, served, headers, uri, object, false)?;
    let limit = match query.limit.as_deref().map(str::parse::<usize>) {
        None => 10,
        Some(Ok(limit)) if (1..=100).contains(&limit) => limit,
        Some(_) => {
            return Err(error(
                fake,
                served,
                StatusCode::BAD_REQUEST,
                "VALIDATION_ERROR",
                "limit must be between 1 and 100",
            ))
        }
    };
    let after: u64 = match query.after.as_deref().map(str::parse) {
        None => 0,
        Some(Ok(after)) => after,
        Some(Err(_)) => {
            return Err(error(
                fake,
                served,
                StatusCode::BAD_REQUEST,
                "VALIDATION_ERROR",
                "after is not a valid paging token",
            ))
        }
    };
    let archived = query.archived();
    if archived {
        fake.stats.archived_lists += 1;
    }
    let Some(set) = fake.objects.get(super::canonical(object)) else {
        return Err(unknown_object(fake, served, object));
    };
    let properties = set.known_of(set.properties_or_defaults(query.properties.as_deref()));
    let mut page: Vec<Answer<'_>> = Vec::with_capacity(limit);
    let mut next = None;
    for object in set
        .records
        .range(after..)
        .map(|(_, o)| o)
        .filter(|o| o.archived_at.is_some() == archived)
    {
        if page.len() == limit {
            next = Some(object.id);
            break;
        }
        page.push(Answer {
            url: served.record_url(&set.object_type, object.id),
            ..object.answer(&properties)
        });
    }
    let records = page.len() as u64;
    let body = Listing {
        total: None,
        results: page,
        paging: next.map(|next| Paging {
            next: Next {
                link: Some(Served::link(
                    &served.routes().objects,
                    object,
                    &next.to_string(),
                )),
                after: next.to_string(),
            },
        }),
    };
    // Written straight from the records: no intermediate JSON tree.
    Ok((
        serde_json::to_vec(&body).unwrap_or_default(),
        records,
        fault,
        limit_headers,
    ))
}
