//! Which properties a page asks for, and telling the store their types: the stream's own list,
//! or every property the account defines for the object, discovered again at a run's first
//! page (see the `properties` module for why a changed set starts a full read).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use weld_pipeline::source::{Field, FieldKind, PageRequest, Schema};
use weld_pipeline::sync::Locked;
use weld_pipeline::BoxError;

use super::reader::Reader;
use crate::properties::PropertySet;

/// What a fetcher learnt of the object's properties, shared by its clones.
#[derive(Debug, Default)]
pub(super) struct Discovery {
    /// The property set last discovered, for the pages of a run after its first.
    discovered: Mutex<Option<PropertySet>>,
    /// Whether a listed property set's definitions were read (once per source).
    listed_described: AtomicBool,
    /// Whether the store refused the stream's fields at the last try (told once, not per run).
    describe_failing: AtomicBool,
}

impl Discovery {
    /// The property set last discovered, if any was.
    pub(super) fn last(&self) -> Option<PropertySet> {
        self.discovered.locked().clone()
    }

    /// Keeps the set of the definitions `schema` as the one discovered, and returns it.
    pub(super) fn discovered(&self, schema: &Schema) -> PropertySet {
        let set = PropertySet::new(schema.fields.iter().map(|f| f.name.clone()).collect());
        *self.discovered.locked() = Some(set.clone());
        set
    }

    /// The properties this page asks for: the stream's list, or every property of the object,
    /// discovered anew when `fresh` (a run's first page) and otherwise as last discovered. With
    /// the set, the fields to describe to the store when definitions were read for it: at
    /// every discovery, and for a listed set once per source when there is a store to tell
    /// (`describing`; a failure to read them then costs the typed fields, not the run).
    pub(super) async fn property_set(
        &self,
        reader: &Reader,
        fresh: bool,
        describing: bool,
    ) -> Result<(PropertySet, Option<Schema>), BoxError> {
        if let Some(listed) = &reader.object.properties {
            let set = PropertySet::new(listed.clone());
            if !fresh || !describing || self.listed_described.swap(true, Ordering::Relaxed) {
                return Ok((set, None));
            }
            let schema = match reader.definitions().await {
                Ok(defined) => Some(listed_schema(&set, &defined)),
                Err(error) => {
                    tracing::warn!(object = %reader.object.object_type, error = %error, "the property definitions cannot be read: the listed properties are stored, untyped");
                    None
                }
            };
            return Ok((set, schema));
        }
        if !fresh {
            if let Some(set) = self.last() {
                return Ok((set, None));
            }
        }
        let schema = reader.definitions().await?;
        let set = self.discovered(&schema);
        Ok((set, Some(schema)))
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
