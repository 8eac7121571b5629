//! Associations: links between records of two types, kept in both directions, served by
//! `POST /crm/v4/associations/{from}/{to}/batch/read` and
//! `POST /crm/associations/2026-03/{from}/{to}/batch/read` in HubSpot's shape (one record's
//! links and the link types are in the `links` module).
//!
//! - `{"inputs":[{"id":"1"},{"id":"2","after":"500"}]}`, at most 1,000 inputs (more is a 400, as
//!   HubSpot refuses since February 2025);
//! - each result `{"from":{"id"},"to":[{"toObjectId":<number>,"associationTypes":[{"category",
//!   "typeId","label"}]}]}` (`toObjectId` as text on the dated path, as HubSpot's 2026-03 SDK
//!   types it), with `paging.next.after` only when the record has more links than
//!   [`FakeConfig::association_page`](super::FakeConfig::association_page);
//! - an id without links (or unknown) is left out of the results and named in `errors` with
//!   category `NO_ASSOCIATIONS_FOUND`, and the answer is then a 207 (Multi-Status).
//!
//! Type ids are HubSpot's own for its standard pairs (contact to company 279, with the primary
//! company also 1 `Primary`; company to contact 280; contact to deal 4; deal to contact 3; deal
//! to company 341; company to deal 342; ticket to contact 16; contact to ticket 15), 1 for others.
//! Links change without touching modification times, as in HubSpot (`POST /_admin/mutate` with
//! `relink`).

use std::collections::{BTreeMap, HashMap};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Uri};
use axum::response::Response;
use serde::Deserialize;
use serde_json::{json, Value};

use super::admission::{admit, batch_body, unknown_object};
use super::versions::Served;
use super::wire::batch_answer;
use super::{answer_batch, canonical, Fake, Refusal, Shared};

/// The most inputs one batch read takes.
const MAX_INPUTS: usize = 1_000;

/// Every link, by direction: `(from type, to type) -> from id -> to ids`, sorted.
#[derive(Debug, Default)]
pub(crate) struct Links {
    by_pair: HashMap<(String, String), BTreeMap<u64, Vec<u64>>>,
}

impl Links {
    /// Links `a` (of `a_type`) and `b` (of `b_type`), both ways.
    pub(crate) fn link(&mut self, a_type: &str, a: u64, b_type: &str, b: u64) {
        for (from_type, from, to_type, to) in [(a_type, a, b_type, b), (b_type, b, a_type, a)] {
            let ids = self
                .by_pair
                .entry((from_type.to_string(), to_type.to_string()))
                .or_default()
                .entry(from)
                .or_default();
            if let Err(at) = ids.binary_search(&to) {
                ids.insert(at, to);
            }
        }
    }

    /// Removes every link of `a` (of `a_type`) to records of `b_type`, both ways.
    pub(crate) fn unlink_all(&mut self, a_type: &str, a: u64, b_type: &str) {
        let pair = (a_type.to_string(), b_type.to_string());
        let removed = self
            .by_pair
            .get_mut(&pair)
            .and_then(|m| m.remove(&a))
            .unwrap_or_default();
        let back = (b_type.to_string(), a_type.to_string());
        if let Some(reverse) = self.by_pair.get_mut(&back) {
            for b in removed {
                if let Some(ids) = reverse.get_mut(&b) {
                    ids.retain(|id| *id != a);
                }
            }
        }
    }

    /// Removes every link of `a` (of `a_type`), both ways; returns what it linked to, by type.
    pub(crate) fn remove(&mut self, a_type: &str, a: u64) -> Vec<(String, Vec<u64>)> {
        let types: Vec<String> = self
            .by_pair
            .keys()
            .filter(|(from, _)| from == a_type)
            .map(|(_, to)| to.clone())
            .collect();
        let mut removed = Vec::new();
        for to in types {
            let ids = self.of(a_type, a, &to).to_vec();
            self.unlink_all(a_type, a, &to);
            removed.push((to, ids));
        }
        removed
    }

    /// The ids `from` (of `from_type`) links to in `to_type`.
    pub(crate) fn of(&self, from_type: &str, from: u64, to_type: &str) -> &[u64] {
        self.by_pair
            .get(&(from_type.to_string(), to_type.to_string()))
            .and_then(|m| m.get(&from))
            .map_or(&[], Vec::as_slice)
    }

    /// Every link from `from_type` to `to_type`, as `from id -> to ids` (in text).
    pub(crate) fn all(&self, from_type: &str, to_type: &str) -> BTreeMap<String, Vec<String>> {
        self.by_pair
            .get(&(from_type.to_string(), to_type.to_string()))
            .map(|m| {
                m.iter()
                    .filter(|(_, to)| !to.is_empty())
                    .map(|(from, to)| (from.to_string(), to.iter().map(u64::to_string).collect()))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// The links of a generated portal: every contact to a company, every third to a deal, every
/// deal to a company, every ticket to a contact.
pub(crate) fn generate(objects: &HashMap<String, super::data::ObjectSet>) -> Links {
    let mut links = Links::default();
    let ids = |object_type: &str| -> Vec<u64> {
        objects
            .get(object_type)
            .map(|set| set.records.keys().copied().collect())
            .unwrap_or_default()
    };
    let (contacts, companies, deals, tickets) = (
        ids("contacts"),
        ids("companies"),
        ids("deals"),
        ids("tickets"),
    );
    let nth = |of: &[u64], i: usize| (!of.is_empty()).then(|| of[i % of.len()]);
    for (i, &contact) in contacts.iter().enumerate() {
        if let Some(company) = nth(&companies, i) {
            links.link("contacts", contact, "companies", company);
        }
        if i % 3 == 2 {
            if let Some(deal) = nth(&deals, i / 3) {
                links.link("contacts", contact, "deals", deal);
            }
        }
    }
    for (i, &deal) in deals.iter().enumerate() {
        if let Some(company) = nth(&companies, i * 7) {
            links.link("deals", deal, "companies", company);
        }
    }
    for (i, &ticket) in tickets.iter().enumerate() {
        if let Some(contact) = nth(&contacts, i * 11) {
            links.link("tickets", ticket, "contacts", contact);
        }
    }
    links
}

/// HubSpot's type id of links from `from` to `to`.
pub(super) fn type_id(from: &str, to: &str) -> u64 {
    match (from, to) {
        ("contacts", "companies") => 279,
        ("companies", "contacts") => 280,
        ("contacts", "deals") => 4,
        ("deals", "contacts") => 3,
        ("deals", "companies") => 341,
        ("companies", "deals") => 342,
        ("tickets", "contacts") => 16,
        ("contacts", "tickets") => 15,
        _ => 1,
    }
}

/// The `index`-th link of a `from` record, to `to_id` of type `to`, as HubSpot writes it:
/// `toObjectId` a number on v4, text on dated paths.
pub(super) fn linked(served: Served, from: &str, to: &str, to_id: u64, index: usize) -> Value {
    let to_object_id = if served.is_dated() {
        json!(to_id.to_string())
    } else {
        json!(to_id)
    };
    json!({"toObjectId": to_object_id, "associationTypes": types(from, to, index)})
}

/// The types of the `index`-th link from a `from` record to a `to` record.
fn types(from: &str, to: &str, index: usize) -> Value {
    let unlabeled =
        json!({"category": "HUBSPOT_DEFINED", "typeId": type_id(from, to), "label": null});
    if (from, to) == ("contacts", "companies") && index == 0 {
        json!([{"category": "HUBSPOT_DEFINED", "typeId": 1, "label": "Primary"}, unlabeled])
    } else {
        json!([unlabeled])
    }
}

#[derive(Deserialize)]
struct Request {
    inputs: Vec<Input>,
}

#[derive(Deserialize)]
struct Input {
    id: String,
    #[serde(default)]
    after: Option<String>,
}

pub(super) async fn batch_read_route(
    State(state): State<Shared>,
    axum::Extension(served): axum::Extension<Served>,
    Path((from, to)): Path<(String, String)>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    answer_batch(&state, |fake| {
        let (fault, limit_headers) = admit(fake, served, &headers, &uri.to_string(), &from, false)?;
        let (from, to) = known_pair(fake, served, &from, &to)?;
        let (body, served_links, partial) = batch_read(fake, served, &from, &to, &body)?;
        Ok(((body, served_links, fault, limit_headers), partial))
    })
    .await
}

/// The canonical names of `from` and `to`, or HubSpot's 404 for the first it does not know.
pub(super) fn known_pair(
    fake: &mut Fake,
    served: Served,
    from: &str,
    to: &str,
) -> Result<(String, String), Refusal> {
    let (from, to) = (canonical(from).to_string(), canonical(to).to_string());
    for object in [&from, &to] {
        if !fake.objects.contains_key(object.as_str()) {
            return Err(unknown_object(fake, served, object));
        }
    }
    Ok((from, to))
}

/// The answer, the links in it, and whether it is partial (some ids had nothing to read).
fn batch_read(
    fake: &mut Fake,
    served: Served,
    from: &str,
    to: &str,
    body: &[u8],
) -> Result<(Vec<u8>, u64, bool), Refusal> {
    let request: Request =
        batch_body(fake, served, body, MAX_INPUTS, |r: &Request| r.inputs.len())?;
    let page = fake.config.association_page.max(1);
    let (mut results, mut errors, mut served_links) = (Vec::new(), Vec::new(), 0u64);
    for input in &request.inputs {
        let linked = input
            .id
            .parse::<u64>()
            .map(|id| fake.links.of(from, id, to))
            .unwrap_or(&[]);
        let start: usize = input
            .after
            .as_deref()
            .and_then(|a| a.parse().ok())
            .unwrap_or(0);
        if linked.is_empty() || start >= linked.len() {
            errors.push(json!({
                "status": "error",
                "category": "NO_ASSOCIATIONS_FOUND",
                "message": format!("No {to} is associated with {from} {}.", input.id),
                "context": {"fromObjectId": [input.id]},
                "errors": [],
                "links": {},
            }));
            continue;
        }
        let end = (start + page).min(linked.len());
        let to_items: Vec<Value> = (start..end)
            .map(|i| self::linked(served, from, to, linked[i], i))
            .collect();
        served_links += to_items.len() as u64;
        let mut result = json!({"from": {"id": input.id}, "to": to_items});
        if end < linked.len() {
            result["paging"] = json!({"next": {"after": end.to_string(), "link": null}});
        }
        results.push(result);
    }
    let partial = !errors.is_empty();
    let answer = batch_answer(results, errors);
    Ok((answer.to_string().into_bytes(), served_links, partial))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_go_both_ways_and_unlinking_removes_both() {
        let mut links = Links::default();
        links.link("contacts", 1, "companies", 9);
        links.link("contacts", 1, "companies", 8);
        assert_eq!(links.of("contacts", 1, "companies"), &[8, 9]);
        assert_eq!(links.of("companies", 9, "contacts"), &[1]);
        links.unlink_all("contacts", 1, "companies");
        assert!(links.of("contacts", 1, "companies").is_empty());
        assert!(links.of("companies", 9, "contacts").is_empty());
    }
}
