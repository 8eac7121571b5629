//! Sources by kind: what a stream's `{"kind": ...}` names, checked where streams are started and
//! built where they run.
//!
//! A stream's configuration names its source as a [`SourceSpec`]: a `kind` and that kind's
//! parameters. Two services read it:
//!
//! - **data-streams** checks it when a stream is started ([`SourceKind::check`]): an unknown
//!   kind or a bad parameter is refused there, with a message for the person who sent it, not
//!   later by a worker. The check also writes the kind's defaults in, so a stream's status says
//!   what it reads and two starts asking for the same thing compare equal. Checking needs no
//!   credentials: data-streams never holds a source's token.
//! - **a worker** builds the source of each stream it is given ([`SourceFactory::source`]) and
//!   tells the controller, in its hello, which kinds it builds, so that a stream is only ever
//!   assigned to a worker that can run it.
//!
//! [`SourceKinds`] and [`Sources`] are the registries of each side, dispatching on `spec.kind`.
//! Adding a kind is one folder: a type implementing [`SourceKind`] (and [`SourceFactory`] where
//! it runs), registered with `.with(...)` in each service.
//!
//! ```
//! use std::sync::Arc;
//! use weld_pipeline::source::{GeneratorSources, SourceKinds, Sources};
//! use weld_pipeline::SourceSpec;
//!
//! let kinds = SourceKinds::new().with(Arc::new(GeneratorSources));
//! let spec: SourceSpec = serde_json::from_str(r#"{"kind":"generator","records":10}"#)?;
//! let checked = kinds.check(&spec)?;
//! assert_eq!(checked.params["page_size"], 100); // the default, written in
//! assert!(kinds.check(&serde_json::from_str(r#"{"kind":"ftp"}"#)?).is_err());
//!
//! let sources = Sources::new().with(Arc::new(GeneratorSources));
//! assert_eq!(sources.kinds(), ["generator"]);
//! # Ok::<_, Box<dyn std::error::Error>>(())
//! ```

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::Source;
use crate::error::Error;
use crate::stream::StreamName;

/// Where a stream's records come from: a source kind and its parameters, as the API takes them
/// (`{"kind":"hubspot","object":"contacts","properties":["email"]}`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SourceSpec {
    /// The kind of source, which picks the implementation on the worker.
    pub kind: String,
    /// Everything else, read by that source.
    #[serde(flatten)]
    pub params: serde_json::Map<String, serde_json::Value>,
}

/// One kind of source, as data-streams knows it: its name and how its parameters are checked.
///
/// An implementation may refuse anything it cannot run, and must not reach the network or need
/// credentials: it runs on data-streams, inside a request.
pub trait SourceKind: Send + Sync + 'static {
    /// The kind's name, as `spec.kind` says it (`hubspot`, `generator`).
    fn kind(&self) -> &str;

    /// Checks a spec of this kind and returns it with the kind's defaults written in. Called only
    /// with specs whose `kind` is this one.
    ///
    /// # Errors
    ///
    /// [`Error::Invalid`], saying what is wrong, for parameters the kind does not take.
    fn check(&self, spec: &SourceSpec) -> Result<SourceSpec, Error>;

    /// The JSON Schema of the kind's parameters (`kind` aside), for the API's OpenAPI document:
    /// as strict as [`check`](SourceKind::check), so that a client generated from the document
    /// sends only what is accepted. The default takes any object.
    fn params_schema(&self) -> serde_json::Value {
        serde_json::json!({ "type": "object" })
    }

    /// Whether a stream that reads `stored` (checked) may be started again reading `asked`
    /// (checked, of this kind) and keep its records and checkpoint: the records are the same
    /// ones, read differently (more properties, say), and the source itself notices the change
    /// in its checkpoint. The default: only the very same spec.
    fn same_records(&self, stored: &SourceSpec, asked: &SourceSpec) -> bool {
        stored == asked
    }
}

/// Builds a kind's sources, on a worker.
pub trait SourceFactory: SourceKind {
    /// The source of one stream. Called with specs of this kind only.
    ///
    /// # Errors
    ///
    /// [`Error::Invalid`] for parameters it does not accept; the controller records it as the
    /// stream's error.
    fn source(&self, stream: &StreamName, spec: &SourceSpec) -> Result<Arc<dyn Source>, Error>;
}

/// A registry of source kinds, dispatching on `spec.kind`: [`SourceKinds`] on data-streams,
/// [`Sources`] on a worker. The first kind registered is the default of a stream started without
/// a source.
pub struct Registry<K: ?Sized> {
    kinds: Vec<Arc<K>>,
}

/// The kinds data-streams accepts, to check start requests.
pub type SourceKinds = Registry<dyn SourceKind>;

/// The kinds a worker runs, to build its streams' sources.
pub type Sources = Registry<dyn SourceFactory>;

impl<K: ?Sized> Default for Registry<K> {
    fn default() -> Self {
        Registry { kinds: Vec::new() }
    }
}

impl<K: ?Sized> Clone for Registry<K> {
    fn clone(&self) -> Self {
        Registry {
            kinds: self.kinds.clone(),
        }
    }
}

impl<K: ?Sized + SourceKind> fmt::Debug for Registry<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.kinds.iter().map(|k| k.kind()))
            .finish()
    }
}

impl<K: ?Sized + SourceKind> Registry<K> {
    /// An empty registry: it refuses every kind.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a kind; one already registered under its name is replaced.
    #[must_use]
    pub fn with(mut self, kind: Arc<K>) -> Self {
        self.kinds.retain(|k| k.kind() != kind.kind());
        self.kinds.push(kind);
        self
    }

    /// The names of the kinds registered, the default first.
    pub fn kinds(&self) -> Vec<String> {
        self.kinds.iter().map(|k| k.kind().to_owned()).collect()
    }

    /// The kind a spec names.
    ///
    /// # Errors
    ///
    /// [`Error::Invalid`] naming the kinds there are.
    pub fn get(&self, kind: &str) -> Result<&Arc<K>, Error> {
        self.kinds.iter().find(|k| k.kind() == kind).ok_or_else(|| {
            let known = self.kinds().join(", ");
            Error::Invalid(format!(
                "unknown source kind {:?}; this service runs: {known}",
                cut(kind)
            ))
        })
    }

    /// Checks a spec against its kind, returning it with the kind's defaults written in.
    ///
    /// # Errors
    ///
    /// [`Error::Invalid`] for an unknown kind or parameters the kind does not take.
    ///
    /// A whole number written as a float (`5.0`) is an integer in JSON Schema's eyes, and the
    /// [schema](Registry::schema) says `integer`: such numbers reach the kind as integers.
    pub fn check(&self, spec: &SourceSpec) -> Result<SourceSpec, Error> {
        let kind = self.get(&spec.kind)?;
        let mut spec = spec.clone();
        spec.params.values_mut().for_each(whole_numbers_as_integers);
        kind.check(&spec)
    }

    /// Whether a stream reading `stored` may go on reading `asked` (see
    /// [`SourceKind::same_records`]); never across kinds.
    pub fn same_records(&self, stored: &SourceSpec, asked: &SourceSpec) -> bool {
        stored.kind == asked.kind
            && self
                .get(&asked.kind)
                .is_ok_and(|kind| kind.same_records(stored, asked))
    }

    /// The JSON Schema of a spec this registry accepts: one of the kinds' objects, each with its
    /// `kind` required and constant.
    pub fn schema(&self) -> serde_json::Value {
        let kinds = self.kinds.iter().map(|kind| {
            let mut schema = kind.params_schema();
            if let serde_json::Value::Object(schema) = &mut schema {
                let properties = schema
                    .entry("properties")
                    .or_insert_with(|| serde_json::json!({}));
                if let serde_json::Value::Object(properties) = properties {
                    properties.insert("kind".into(), serde_json::json!({ "const": kind.kind() }));
                }
                let required = schema
                    .entry("required")
                    .or_insert_with(|| serde_json::json!([]));
                if let serde_json::Value::Array(required) = required {
                    required.insert(0, "kind".into());
                }
            }
            schema
        });
        serde_json::json!({ "oneOf": kinds.collect::<Vec<_>>() })
    }

    /// The source of a stream started without one: the default kind, with its default
    /// parameters. `None` when nothing is registered.
    pub fn default_spec(&self) -> Option<SourceSpec> {
        let kind = self.kinds.first()?;
        kind.check(&SourceSpec {
            kind: kind.kind().to_owned(),
            params: serde_json::Map::new(),
        })
        .ok()
    }
}

impl Sources {
    /// Builds the source of a stream, from the factory of its kind.
    ///
    /// # Errors
    ///
    /// [`Error::Invalid`] for a kind this worker does not run, or parameters it does not take.
    pub fn source(&self, stream: &StreamName, spec: &SourceSpec) -> Result<Arc<dyn Source>, Error> {
        self.get(&spec.kind)?.source(stream, spec)
    }
}

/// Turns `5.0` into `5`, at any depth; a fraction or a number past 2^53 stays as it is.
fn whole_numbers_as_integers(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Number(number) if !number.is_i64() && !number.is_u64() => {
            let Some(float) = number.as_f64() else { return };
            // Below 2^53 every whole f64 converts exactly.
            if float.fract() == 0.0 && float.abs() < 9_007_199_254_740_992.0 {
                *value = serde_json::Value::from(float as i64);
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(whole_numbers_as_integers),
        serde_json::Value::Object(fields) => {
            fields.values_mut().for_each(whole_numbers_as_integers);
        }
        _ => {}
    }
}

/// A name from a request, cut for an error message: a message never echoes input at length.
fn cut(text: &str) -> &str {
    match text.char_indices().nth(100) {
        Some((at, _)) => &text[..at],
        None => text,
    }
}
