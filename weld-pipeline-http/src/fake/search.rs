//! The search endpoint: filters, one sort rule, offset paging capped at 10,000 results.

use std::cmp::Ordering;

use axum::http::{HeaderMap, StatusCode};
use serde::Deserialize;
use serde_json::Value;
use weld_pipeline::Timestamp;

use super::data::{Answer, Object};
use super::{admit, error, properties_or_defaults, Built, Fake, Listing, Next, Paging, Refusal};

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

fn matches(object: &Object, filter: &Filter) -> Result<bool, String> {
    let stored = object
        .properties
        .get(&filter.property_name)
        .cloned()
        .flatten();
    let wanted = filter.value.as_ref().map(text);
    let property = filter.property_name.as_str();
    let cmp = |want: &Option<String>| match (&stored, want) {
        (Some(s), Some(w)) => compare(property, s, w),
        _ => None,
    };
    Ok(match filter.operator.as_str() {
        "EQ" => cmp(&wanted) == Some(Ordering::Equal),
        "NEQ" => cmp(&wanted) != Some(Ordering::Equal),
        "LT" => cmp(&wanted) == Some(Ordering::Less),
        "LTE" => matches!(cmp(&wanted), Some(Ordering::Less | Ordering::Equal)),
        "GT" => cmp(&wanted) == Some(Ordering::Greater),
        "GTE" => matches!(cmp(&wanted), Some(Ordering::Greater | Ordering::Equal)),
        "BETWEEN" => {
            let high = filter.high_value.as_ref().map(text);
            matches!(cmp(&wanted), Some(Ordering::Greater | Ordering::Equal))
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
        "CONTAINS_TOKEN" => stored.zip(wanted).is_some_and(|(s, w)| {
            s.to_lowercase()
                .contains(&w.to_lowercase().replace('*', ""))
        }),
        "NOT_CONTAINS_TOKEN" => !stored
            .zip(wanted)
            .is_some_and(|(s, w)| s.to_lowercase().contains(&w.to_lowercase())),
        other => return Err(format!("Unknown operator {other}")),
    })
}

pub(super) fn build(
    fake: &mut Fake,
    object: &str,
    uri: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Built, Refusal> {
    let (fault, limit_headers) = admit(fake, headers, uri, object, true)?;
    let body: Body = match serde_json::from_slice(body) {
        Ok(body) => body,
        Err(e) => {
            return Err(error(
                fake,
                StatusCode::BAD_REQUEST,
                "VALIDATION_ERROR",
                &format!("Invalid input JSON: {e}"),
            ))
        }
    };
    if body.sorts.len() > 1 {
        return Err(error(
            fake,
            StatusCode::BAD_REQUEST,
            "VALIDATION_ERROR",
            "Only one sort is allowed.",
        ));
    }
    let limit = body.limit.unwrap_or(10) as usize;
    if !(1..=200).contains(&limit) {
        return Err(error(
            fake,
            StatusCode::BAD_REQUEST,
            "VALIDATION_ERROR",
            "limit must be between 1 and 200",
        ));
    }
    let offset: usize = match body.after.as_ref().map(text).map(|a| a.parse()) {
        None => 0,
        Some(Ok(offset)) => offset,
        Some(Err(_)) => {
            return Err(error(
                fake,
                StatusCode::BAD_REQUEST,
                "VALIDATION_ERROR",
                "after must be an offset",
            ))
        }
    };
    if offset >= SEARCH_CAP {
        return Err(error(
            fake,
            StatusCode::BAD_REQUEST,
            "VALIDATION_ERROR",
            "Paging past 10,000 results is not supported; narrow the search instead.",
        ));
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
    let Fake { objects, rng, .. } = fake;
    let Some(set) = objects.get(object) else {
        return Err(error(
            fake,
            StatusCode::NOT_FOUND,
            "OBJECT_NOT_FOUND",
            &format!("Unable to infer object type from: {object}"),
        ));
    };
    let mut found: Vec<&Object> = Vec::new();
    for candidate in set.records.values().filter(|o| o.archived_at.is_none()) {
        let mut any = body.filter_groups.is_empty();
        for group in &body.filter_groups {
            let mut all = true;
            for filter in &group.filters {
                match matches(candidate, filter) {
                    Ok(true) => {}
                    Ok(false) => {
                        all = false;
                        break;
                    }
                    Err(message) => {
                        return Err(error(
                            fake,
                            StatusCode::BAD_REQUEST,
                            "VALIDATION_ERROR",
                            &message,
                        ))
                    }
                }
            }
            if all {
                any = true;
                break;
            }
        }
        if any {
            found.push(candidate);
        }
    }
    // No order among ties is promised: shuffle, then a stable sort on the one rule.
    rng.shuffle(&mut found);
    if let Some((property, descending)) = &sort {
        found.sort_by(|a, b| {
            let (a, b) = (
                a.properties.get(property).cloned().flatten(),
                b.properties.get(property).cloned().flatten(),
            );
            let order = match (a, b) {
                (Some(a), Some(b)) => key(property, &a)
                    .partial_cmp(&key(property, &b))
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
    let total = found.len();
    let properties = if body.properties.is_empty() {
        properties_or_defaults(set, None)
    } else {
        body.properties.clone()
    };
    let page: Vec<Answer<'_>> = found
        .iter()
        .skip(offset)
        .take(limit)
        .map(|o| o.answer(&properties, &set.known))
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
