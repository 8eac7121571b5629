//! Which properties a page asks for, and telling the store their types: the stream's own list,
//! or every property the account defines for the object, discovered again at a run's first
//! page (see the `properties` module for why a changed set starts a full read); and whether
//! the set has a property HubSpot calculates (which makes the stream refresh).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use weld_pipeline::source::{Field, FieldKind, PageRequest, Schema};
use weld_pipeline::sync::Locked;
use weld_pipeline::BoxError;

use super::reader::Reader;
use crate::properties::{Defined, PropertySet};

/// What a fetcher learnt of the object's properties, shared by its clones.
#[derive(Debug, Default)]
pub(super) struct Discovery {
    /// The property set last discovered, for the pages of a run after its first.
    discovered: Mutex<Option<PropertySet>>,
    /// Whether a listed property set's definitions were read (once per source).
    listed_described: AtomicBool,
    /// Whether the listed set has a property HubSpot calculates, as its definitions said.
    listed_calculated: AtomicBool,
    /// Whether the store refused the stream's fields at the last try (told once, not per run).
    describe_failing: AtomicBool,
}

impl Discovery {
    /// The property set last discovered, if any was.
    pub(super) fn last(&self) -> Option<PropertySet> {
        self.discovered.locked().clone()
    }

    /// Keeps the set of the definitions `defined` as the one discovered, and returns it.
    pub(super) fn discovered(&self, defined: &Defined) -> PropertySet {
        let set = PropertySet::new(
            defined
                .schema
                .fields
                .iter()
                .map(|f| f.name.clone())
                .collect(),
        )
        .with_calculated(!defined.calculated.is_empty());
        *self.discovered.locked() = Some(set.clone());
        set
    }

    /// The properties this page asks for: the stream's list, or every property of the object,
    /// discovered anew when `fresh` (a run's first page) and otherwise as last discovered. With
    /// the set, the fields to describe to the store when definitions were read for it: at
    /// every discovery, and for a listed set once per source, at its first run's first page,
    /// when there is a store to tell (`describing`). A listed set's definitions are read then
    /// with or without a store: they say whether one of its properties is calculated. A
    /// failure to read them costs the typed fields and the refresh, not the run.
    pub(super) async fn property_set(
        &self,
        reader: &Reader,
        fresh: bool,
        describing: bool,
    ) -> Result<(PropertySet, Option<Schema>), BoxError> {
        if let Some(listed) = &reader.object.properties {
            let set = PropertySet::new(listed.clone());
            if !fresh || self.listed_described.swap(true, Ordering::Relaxed) {
                let calculated = self.listed_calculated.load(Ordering::Relaxed);
                return Ok((set.with_calculated(calculated), None));
            }
            let schema = match reader.definitions().await {
                Ok(defined) => {
                    let calculated = defined.any_calculated(set.names());
                    self.listed_calculated.store(calculated, Ordering::Relaxed);
                    describing.then(|| listed_schema(&set, &defined.schema))
                }
                Err(error) => {
                    tracing::warn!(object = %reader.object.object_type, error = %error, "the property definitions cannot be read: the listed properties are stored untyped, and none is known to be calculated");
                    None
                }
            };
            let calculated = self.listed_calculated.load(Ordering::Relaxed);
            return Ok((set.with_calculated(calculated), schema));
        }
        if !fresh {
            if let Some(set) = self.last() {
                return Ok((set, None));
            }
        }
        let defined = reader.definitions().await?;
        let set = self.discovered(&defined);
        Ok((set, Some(defined.schema)))
    }

    /// Tells the store the fields of the stream's records, when it can be told. The records do
    /// not depend on it: a failure is logged, and the next run tells it again.
    pub(super) async fn describe(&self, request: &PageRequest, schema: &Schema) {
        let Some(catalog) = &request.catalog else {
            return;
        };
        // Said once when it begins failing and once when it heals, not at every run.
        match catalog.describe(&request.stream, schema).await {
            Err(error) if !self.describe_failing.swap(true, Ordering::Relaxed) => {
                tracing::warn!(stream = %request.stream, error = %error, "the store cannot be told the stream's fields; each run tells it again");
            }
            Err(error) => {
                tracing::debug!(stream = %request.stream, error = %error, "the store still cannot be told the stream's fields");
            }
            Ok(()) if self.describe_failing.swap(false, Ordering::Relaxed) => {
                tracing::info!(stream = %request.stream, "the store was told the stream's fields again");
            }
            Ok(()) => {}
        }
    }
}

/// The fields of a listed set: each with its type as `defined`, text where the account does
/// not define it.
fn listed_schema(set: &PropertySet, defined: &Schema) -> Schema {
    Schema::new(set.names().iter().map(|name| {
        let kind = defined
            .fields
            .iter()
            .find(|f| &f.name == name)
            .map_or(FieldKind::Text, |f| f.kind);
        Field {
            name: name.clone(),
            kind,
        }
    }))
}
