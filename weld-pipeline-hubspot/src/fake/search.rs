//! The search endpoint: filters, one sort rule, offset paging capped at 10,000 results.

use std::cmp::Ordering;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;
use serde::Deserialize;
use serde_json::Value;
use weld_pipeline::Timestamp;

use super::admission::{admit, error, unknown_object};
use super::data::{Answer, Object};
use super::versions::Served;
use super::wire::{Built, Listing, Next, Paging};
use super::{answer, Fake, Refusal, Shared};

/// HubSpot refuses to page past this many search results.
const SEARCH_CAP: usize = 10_000;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Body {
    #[serde(default)]
    filter_groups: Vec<Group>,
    #[serde(default)]
    sorts: Vec<Value>,
    #[serde(default)]
    properties: Vec<String>,
    limit: Option<u64>,
    after: Option<Value>,
}

#[derive(Deserialize)]
struct Group {
    #[serde(default)]
    filters: Vec<Filter>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Filter {
    property_name: String,
    operator: String,
    value: Option<Value>,
    high_value: Option<Value>,
    values: Option<Vec<Value>>,
}

fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Date properties compare as epoch milliseconds (filter values are epoch ms as strings, or
/// ISO times); numbers as numbers; the rest as text.
fn key(property: &str, value: &str) -> Key {
    if matches!(
        property,
        "createdate" | "lastmodifieddate" | "hs_lastmodifieddate" | "closedate"
    ) {
        if let Ok(ms) = value.parse::<i64>() {
            return Key::Number(ms as f64);
        }
        if let Ok(at) = Timestamp::parse_rfc3339(value) {
            return Key::Number(at.as_millis() as f64);
        }
    }
    match value.parse::<f64>() {
        Ok(n) => Key::Number(n),
        Err(_) => Key::Text(value.to_string()),
    }
}

#[derive(PartialEq, PartialOrd)]
enum Key {
    Number(f64),
    Text(String),
}

fn compare(property: &str, stored: &str, wanted: &str) -> Option<Ordering> {
    key(property, stored).partial_cmp(&key(property, wanted))
}

/// A filter's value, read once for a whole search rather than once per record.
struct Prepared<'a> {
    filter: &'a Filter,
    wanted: Option<String>,
    /// For `hs_object_id`, the wanted id: compared with the record's id as numbers.
    id: Option<u64>,
}

impl<'a> Prepared<'a> {
    fn new(filter: &'a Filter) -> Self {
        let wanted = filter.value.as_ref().map(text);
        let id = (filter.property_name == "hs_object_id")
            .then(|| wanted.as_deref()?.parse().ok())
            .flatten();
        Prepared { filter, wanted, id }
    }

    fn matches(&self, object: &Object) -> Result<bool, String> {
        let by_id = match (self.id, self.filter.operator.as_str()) {
            (Some(id), "EQ") => Some(object.id == id),
            (Some(id), "GT") => Some(object.id > id),
            (Some(id), "GTE") => Some(object.id >= id),
            (Some(id), "LT") => Some(object.id < id),
            (Some(id), "LTE") => Some(object.id <= id),
            _ => None,
        };
        match by_id {
            Some(matched) => Ok(matched),
            None => matches(object, self.filter, &self.wanted),
        }
    }
}

fn matches(object: &Object, filter: &Filter, wanted: &Option<String>) -> Result<bool, String> {
    let stored = object
        .properties
        .get(&filter.property_name)
        .and_then(Option::as_deref);
    let property = filter.property_name.as_str();
    let cmp = |want: &Option<String>| match (stored, want) {
        (Some(s), Some(w)) => compare(property, s, w),
        _ => None,
    };
    Ok(match filter.operator.as_str() {
        "EQ" => cmp(wanted) == Some(Ordering::Equal),
        "NEQ" => cmp(wanted) != Some(Ordering::Equal),
        "LT" => cmp(wanted) == Some(Ordering::Less),
        "LTE" => matches!(cmp(wanted), Some(Ordering::Less | Ordering::Equal)),
        "GT" => cmp(wanted) == Some(Ordering::Greater),
        "GTE" => matches!(cmp(wanted), Some(Ordering::Greater | Ordering::Equal)),
        "BETWEEN" => {
            let high = filter.high_value.as_ref().map(text);
            matches!(cmp(wanted), Some(Ordering::Greater | Ordering::Equal))
                && matches!(cmp(&high), Some(Ordering::Less | Ordering::Equal))
        }
        "IN" | "NOT_IN" => {
            let values: Vec<String> = filter.values.iter().flatten().map(text).collect();
            let found = values
                .iter()
                .any(|v| cmp(&Some(v.clone())) == Some(Ordering::Equal));
            found == (filter.operator == "IN")
        }
        "HAS_PROPERTY" => stored.is_some(),
        "NOT_HAS_PROPERTY" => stored.is_none(),
        "CONTAINS_TOKEN" => stored.zip(wanted.as_ref()).is_some_and(|(s, w)| {
            s.to_lowercase()
                .contains(&w.to_lowercase().replace('*', ""))
        }),
        "NOT_CONTAINS_TOKEN" => !stored
            .zip(wanted.as_ref())
            .is_some_and(|(s, w)| s.to_lowercase().contains(&w.to_lowercase())),
        other => return Err(format!("Unknown operator {other}")),
    })
}

/// A search request, checked: what HubSpot refuses with a 400 is refused here.
struct Search {
    body: Body,
    limit: usize,
    offset: usize,
    /// The one sort rule: the property, and whether descending.
    sort: Option<(String, bool)>,
}

impl Search {
    fn parse(body: &[u8]) -> Result<Search, String> {
        let body: Body =
            serde_json::from_slice(body).map_err(|e| format!("Invalid input JSON: {e}"))?;
        if body.sorts.len() > 1 {
            return Err("Only one sort is allowed.".into());
        }
        let limit = body.limit.unwrap_or(10) as usize;
        if !(1..=200).contains(&limit) {
            return Err("limit must be between 1 and 200".into());
        }
        let offset: usize = match body.after.as_ref().map(text).map(|a| a.parse()) {
            None => 0,
            Some(Ok(offset)) => offset,
            Some(Err(_)) => return Err("after must be an offset".into()),
        };
        if offset >= SEARCH_CAP {
            return Err(
                "Paging past 10,000 results is not supported; narrow the search instead.".into(),
            );
        }
        let sort = body.sorts.first().map(|s| match s {
            Value::String(name) => (
                name.trim_start_matches('-').to_string(),
                name.starts_with('-'),
            ),
            other => (
                other.get("propertyName").map(text).unwrap_or_default(),
                other.get("direction").map(text).as_deref() == Some("DESCENDING"),
            ),
        });
        Ok(Search {
            body,
            limit,
            offset,
            sort,
        })
    }

    /// The live records matching the filter groups (every filter of a group, AND; any group,
    /// OR; no group matches everything), with how many there are. Sorted by id, the candidates
    /// are in order already and only the first `wanted` are kept; otherwise all of them, to be
    /// ordered.
    fn select<'a>(
        &self,
        objects: impl Iterator<Item = &'a Object>,
    ) -> Result<(Vec<&'a Object>, usize), String> {
        let groups: Vec<Vec<Prepared<'_>>> = self
            .body
            .filter_groups
            .iter()
            .map(|group| group.filters.iter().map(Prepared::new).collect())
            .collect();
        let keep = if self.by_id() {
            self.offset + self.limit
        } else {
            usize::MAX
        };
        let (mut found, mut total) = (Vec::new(), 0);
        for candidate in objects.filter(|o| o.archived_at.is_none()) {
            let mut any = groups.is_empty();
            for group in &groups {
                let mut all = true;
                for filter in group {
                    if !filter.matches(candidate)? {
                        all = false;
                        break;
                    }
                }
                if all {
                    any = true;
                    break;
                }
            }
            if any {
                total += 1;
                if found.len() < keep {
                    found.push(candidate);
                }
            }
        }
        Ok((found, total))
    }

    /// The ids the results can start after: a group's `hs_object_id GT` filter bounds it from
    /// below, when every group has one (what a client re-anchoring by id sends).
    fn id_floor(&self) -> Option<u64> {
        self.body
            .filter_groups
            .iter()
            .map(|group| {
                group
                    .filters
                    .iter()
                    .filter(|f| f.property_name == "hs_object_id" && f.operator == "GT")
                    .filter_map(|f| f.value.as_ref().map(text)?.parse::<u64>().ok())
                    .max()
            })
            .min()
            .flatten()
    }

    /// Whether the query is only "after this id", by id: a full read re-anchored page by page.
    /// Its matches are the live records past the id, counted without walking them.
    fn only_after_id(&self) -> bool {
        self.by_id()
            && self.body.filter_groups.len() == 1
            && self.body.filter_groups[0]
                .filters
                .iter()
                .all(|f| f.property_name == "hs_object_id" && f.operator == "GT")
            && self.id_floor().is_some()
    }

    /// Whether the one rule sorts by id, ascending: the candidates' own order, with no ties.
    fn by_id(&self) -> bool {
        matches!(&self.sort, Some((property, false)) if property == "hs_object_id")
    }

    /// Orders the results: no order among ties is promised, so they are shuffled, then stably
    /// sorted on the one rule. By id there are no ties, and the candidates come in id order.
    fn order(&self, found: &mut [&Object], rng: &mut fastrand::Rng) {
        if self.by_id() {
            return;
        }
        rng.shuffle(found);
        let Some((property, descending)) = &self.sort else {
            return;
        };
        found.sort_by(|a, b| {
            let (a, b) = (
                a.properties.get(property).and_then(Option::as_deref),
                b.properties.get(property).and_then(Option::as_deref),
            );
            let order = match (a, b) {
                (Some(a), Some(b)) => key(property, a)
                    .partial_cmp(&key(property, b))
                    .unwrap_or(Ordering::Equal),
                (Some(_), None) => Ordering::Less,
                (None, Some(_)) => Ordering::Greater,
                (None, None) => Ordering::Equal,
            };
            if *descending {
                order.reverse()
            } else {
                order
            }
        });
    }
}

pub(super) fn build(
    fake: &mut Fake,
    served: Served,
    object: &str,
    uri: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Built, Refusal> {
    let (fault, limit_headers) = admit(fake, served, headers, uri, object, true)?;
    let invalid = |fake: &mut Fake, message: String| {
        error(
            fake,
            served,
            StatusCode::BAD_REQUEST,
            "VALIDATION_ERROR",
            &message,
        )
    };
    let search = match Search::parse(body) {
        Ok(search) => search,
        Err(message) => return Err(invalid(fake, message)),
    };
    let Fake { objects, rng, .. } = fake;
    let Some(set) = objects.get_mut(super::canonical(object)) else {
        return Err(unknown_object(fake, served, object));
    };
    let counted = search
        .only_after_id()
        .then(|| set.live_after(search.id_floor().unwrap_or(0)));
    let set = &*set;
    // Records are kept by id: a search anchored after an id starts there.
    let candidates = match search.id_floor() {
        Some(floor) => set.records.range(floor.saturating_add(1)..),
        None => set.records.range(..),
    };
    let (mut found, total) = match counted {
        // The first of the page's records are all it needs to walk.
        Some(total) => {
            let found = candidates
                .map(|(_, object)| object)
                .filter(|o| o.archived_at.is_none())
                .take(search.offset + search.limit)
                .collect();
            (found, total)
        }
        None => match search.select(candidates.map(|(_, object)| object)) {
            Ok(found) => found,
            Err(message) => return Err(invalid(fake, message)),
        },
    };
    search.order(&mut found, rng);
    let properties = set.known_of(if search.body.properties.is_empty() {
        set.properties_or_defaults(None)
    } else {
        search.body.properties.clone()
    });
    let (offset, limit) = (search.offset, search.limit);
    let page: Vec<Answer<'_>> = found
        .iter()
        .skip(offset)
        .take(limit)
        .map(|o| Answer {
            url: served.record_url(&set.object_type, o.id),
            ..o.answer(&properties)
        })
        .collect();
    let records = page.len() as u64;
    let answer = Listing {
        total: Some(total),
        results: page,
        paging: (offset + limit < total).then(|| Paging {
            next: Next {
                after: (offset + limit).to_string(),
                link: None,
            },
        }),
    };
    Ok((
        serde_json::to_vec(&answer).unwrap_or_default(),
        records,
        fault,
        limit_headers,
    ))
}

pub(super) async fn search_route(
    State(state): State<Shared>,
    axum::Extension(served): axum::Extension<Served>,
    Path(object): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    answer(&state, |fake| {
        build(fake, served, &object, &uri.to_string(), &headers, &body)
    })
    .await
}
