//! A property list too long for one list URL, split across requests for the same page, and the
//! parts merged back by id.
//!
//! A list call names its properties in the URL, and HubSpot refuses a URL past about 2,000
//! bytes (414). The list is cut into parts that each fit; every part asks for the same page
//! (the same `after`); the first part's results decide which records are on the page, and the
//! other parts' properties are added to them by id.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde_json::Value;
use weld_pipeline::BoxError;

use super::parse::{record, unparseable, Listed};

/// `properties` cut into parts whose names (and their separators) take at most `room` bytes
/// each; a name longer than `room` gets a part of its own.
pub(super) fn parts(properties: Vec<String>, room: usize) -> Vec<Vec<String>> {
    let mut parts: Vec<Vec<String>> = vec![vec![]];
    let mut used = 0;
    for property in properties {
        if used + property.len() + 1 > room && !parts.last().is_some_and(Vec::is_empty) {
            parts.push(vec![]);
            used = 0;
        }
        used += property.len() + 1;
        parts.last_mut().expect("never empty").push(property);
    }
    parts
}

/// The page being merged from its parts.
#[derive(Default)]
pub(super) struct Merged {
    /// The first part's results, by position, with their ids.
    records: Vec<(String, Value)>,
    /// The first part's paging token.
    next: Option<String>,
    parts: usize,
}

impl Merged {
    /// Adds one part's answer.
    pub(super) fn add(&mut self, body: &Bytes) -> Result<(), BoxError> {
        let page: Value = serde_json::from_slice(body).map_err(unparseable)?;
        let results = page
            .get("results")
            .and_then(Value::as_array)
            .ok_or_else(|| unparseable("no results"))?;
        self.parts += 1;
        if self.parts == 1 {
            self.next = page
                .pointer("/paging/next/after")
                .and_then(Value::as_str)
                .map(str::to_string);
            for result in results {
                let id = result
                    .get("id")
                    .and_then(Value::as_str)
                    .ok_or_else(|| unparseable("a result without id"))?;
                self.records.push((id.to_string(), result.clone()));
            }
            return Ok(());
        }
        let by_id: BTreeMap<&str, &Value> = results
            .iter()
            .filter_map(|r| Some((r.get("id")?.as_str()?, r)))
            .collect();
        for (id, record) in &mut self.records {
            if let (Some(Value::Object(extra)), Some(Value::Object(properties))) = (
                by_id.get(id.as_str()).and_then(|r| r.get("properties")),
                record.get_mut("properties"),
            ) {
                properties.extend(extra.clone());
            }
        }
        Ok(())
    }

    /// The next page's paging token, as the first part gave it.
    pub(super) fn next(&self) -> Option<&str> {
        self.next.as_deref()
    }

    /// Whether the parts added so far hold no record (the first part decides).
    pub(super) fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The merged page.
    pub(super) fn into_listed(self) -> Result<Listed, BoxError> {
        let mut records = Vec::with_capacity(self.records.len());
        for (_, value) in self.records {
            let raw = serde_json::value::to_raw_value(&value).map_err(unparseable)?;
            records.push(record(&raw)?);
        }
        // Merges are read from live pages (search), never from these archived ones.
        Ok(Listed {
            records,
            next: self.next,
            merges: Vec::new(),
            total: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_fit_the_room_and_keep_every_property_in_order() {
        let properties: Vec<String> = (0..50).map(|i| format!("property_{i}")).collect();
        let parts = parts(properties.clone(), 60);
        assert!(parts.len() > 1);
        for part in &parts {
            let used: usize = part.iter().map(|p| p.len() + 1).sum();
            assert!(used <= 60 || part.len() == 1, "{part:?}");
        }
        assert_eq!(parts.concat(), properties);
    }
}
