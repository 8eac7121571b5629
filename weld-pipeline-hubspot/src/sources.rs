//! The HubSpot sources of a worker: one factory for every stream of kind `hubspot`.

use std::sync::Arc;

use serde::Deserialize;
use weld_pipeline::source::{SourceFactory, SourceKind};
use weld_pipeline::{Error, Source, SourceSpec, StreamName};

use super::{AccountLimits, HubSpotAccount, HubSpotObject, HubSpotPages, OnPermanentDelete};
use weld_pipeline::source::Pages;

/// The source kind of HubSpot streams, as a stream's configuration names it.
pub const KIND: &str = "hubspot";

/// The parameters of a `hubspot` source in a stream's configuration:
/// `{"kind":"hubspot","object":"contacts","properties":["email"]}`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HubSpotParams {
    /// The object type: `contacts` (the default), any other CRM type (`companies`, `deals`,
    /// `tickets`, ...), or a custom object's `objectTypeId` (`2-123456`), fully qualified name
    /// or name; or reference data, read whole on every run: `owners`, `pipelines:deals`,
    /// `pipelines:tickets`.
    #[serde(default = "contacts")]
    pub object: String,
    /// The properties to read; absent for every property the account defines for the type
    /// (discovered at the start of each run, custom ones included).
    #[serde(default)]
    pub properties: Option<Vec<String>>,
    /// The types whose links each record carries in `data.associations`
    /// (`["companies","deals"]`); absent for none.
    #[serde(default)]
    pub associations: Option<Vec<String>>,
    /// How often, in seconds, every record of a stream with associations or a calculated
    /// property is read again, for what changed without moving its modification time (links,
    /// values HubSpot recomputes); absent for a day.
    #[serde(default)]
    pub refresh_secs: Option<u64>,
    /// The old name of `refresh_secs`, still accepted (not both).
    #[serde(default)]
    pub associations_refresh_secs: Option<u64>,
    /// How often, in seconds, a reconciliation sweep compares the source's ids with the store's
    /// and repairs the difference; absent for a day.
    #[serde(default)]
    pub sweep_secs: Option<u64>,
    /// What a record HubSpot deleted for good becomes: `archive` (the default: archived, marked
    /// `deleted_permanently`) or `purge` (removed from the store, links included).
    #[serde(default)]
    pub on_permanent_delete: Option<OnPermanentDelete>,
}

fn contacts() -> String {
    "contacts".into()
}

/// The longest object type name or property name accepted. HubSpot's own names stay far below.
const MAX_NAME: usize = 100;
/// The most properties one stream may ask for; past this a list call would need many requests per
/// page (each URL holds a few dozen names).
const MAX_PROPERTIES: usize = 1_000;
/// The most association types one stream may ask for: each costs a call per page.
const MAX_ASSOCIATIONS: usize = 20;
/// The bounds of `refresh_secs` and `sweep_secs`: a minute to a year.
const REFRESH_SECS: std::ops::RangeInclusive<u64> = 60..=31_536_000;

impl HubSpotParams {
    /// Reads and checks the parameters of `spec`, a `hubspot` source.
    ///
    /// # Errors
    ///
    /// [`Error::Invalid`] for another kind, an unknown parameter or value, a name HubSpot could
    /// not have (empty, too long, or with characters outside letters, digits, `_` and `-`), an
    /// interval out of bounds, or `refresh_secs` given under both its names.
    pub fn from_spec(spec: &SourceSpec) -> Result<Self, Error> {
        if spec.kind != KIND {
            return Err(Error::Invalid(format!(
                "unknown source kind {:?}; this service runs {KIND:?}",
                spec.kind
            )));
        }
        let params: HubSpotParams =
            serde_json::from_value(serde_json::Value::Object(spec.params.clone()))
                .map_err(|e| Error::Invalid(format!("hubspot source: {e}")))?;
        // Reference data names a CRM type after `pipelines:`.
        check_name(
            "object",
            params
                .object
                .strip_prefix("pipelines:")
                .unwrap_or(&params.object),
        )?;
        if let Some(properties) = &params.properties {
            if properties.is_empty() || properties.len() > MAX_PROPERTIES {
                return Err(Error::Invalid(format!(
                    "hubspot source: properties must list 1 to {MAX_PROPERTIES} names"
                )));
            }
            for property in properties {
                check_name("property", property)?;
            }
        }
        if let Some(types) = &params.associations {
            if types.is_empty() || types.len() > MAX_ASSOCIATIONS {
                return Err(Error::Invalid(format!(
                    "hubspot source: associations must list 1 to {MAX_ASSOCIATIONS} object types"
                )));
            }
            for to in types {
                check_name("association type", to)?;
            }
        }
        if params.refresh_secs.is_some() && params.associations_refresh_secs.is_some() {
            return Err(Error::Invalid(
                "hubspot source: give refresh_secs only (associations_refresh_secs is its old name)"
                    .into(),
            ));
        }
        for (name, secs) in [
            ("refresh_secs", params.refresh_secs),
            (
                "associations_refresh_secs",
                params.associations_refresh_secs,
            ),
            ("sweep_secs", params.sweep_secs),
        ] {
            if secs.is_some_and(|secs| !REFRESH_SECS.contains(&secs)) {
                return Err(Error::Invalid(format!(
                    "hubspot source: {name} must be {} to {}",
                    REFRESH_SECS.start(),
                    REFRESH_SECS.end()
                )));
            }
        }
        Ok(params)
    }

    /// `refresh_secs`, under its new name or its old one.
    pub fn refresh(&self) -> Option<u64> {
        self.refresh_secs.or(self.associations_refresh_secs)
    }
}

fn check_name(what: &str, name: &str) -> Result<(), Error> {
    let valid = !name.is_empty()
        && name.len() <= MAX_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if valid {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "hubspot source: {what} {name:?} is not a HubSpot name (1 to {MAX_NAME} letters, digits, _ or -)"
        )))
    }
}

/// The `hubspot` kind as data-streams checks it: no account needed. A checked spec has its
/// object type written in (`contacts` by default).
///
/// ```
/// use weld_pipeline::source::SourceKind;
/// use weld_pipeline_hubspot::HubSpotKind;
///
/// let spec = serde_json::from_str(r#"{"kind":"hubspot"}"#)?;
/// assert_eq!(HubSpotKind.check(&spec)?.params["object"], "contacts");
/// # Ok::<_, Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct HubSpotKind;

impl SourceKind for HubSpotKind {
    fn kind(&self) -> &str {
        KIND
    }

    fn check(&self, spec: &SourceSpec) -> Result<SourceSpec, Error> {
        let params = HubSpotParams::from_spec(spec)?;
        // Written out as read: the object named (`contacts` by default), the properties only
        // when a list restricts them.
        let refresh = params.refresh();
        let mut checked = serde_json::Map::new();
        checked.insert("object".into(), params.object.into());
        if let Some(properties) = params.properties {
            checked.insert("properties".into(), properties.into());
        }
        if let Some(types) = params.associations {
            checked.insert("associations".into(), types.into());
        }
        // Under its new name, whichever it was given as.
        if let Some(secs) = refresh {
            checked.insert("refresh_secs".into(), secs.into());
        }
        if let Some(secs) = params.sweep_secs {
            checked.insert("sweep_secs".into(), secs.into());
        }
        if let Some(on_delete) = params.on_permanent_delete {
            // A unit variant always serializes, as its name.
            checked.insert(
                "on_permanent_delete".into(),
                serde_json::to_value(on_delete).unwrap_or_default(),
            );
        }
        Ok(SourceSpec {
            kind: spec.kind.clone(),
            params: checked,
        })
    }

    /// Another property or association list reads the same records (the next run backfills
    /// them); another object type does not.
    fn same_records(&self, stored: &SourceSpec, asked: &SourceSpec) -> bool {
        stored.kind == asked.kind && stored.params.get("object") == asked.params.get("object")
    }

    fn params_schema(&self) -> serde_json::Value {
        let name = format!("^[A-Za-z0-9_-]{{1,{MAX_NAME}}}$");
        let object = format!("^(pipelines:)?[A-Za-z0-9_-]{{1,{MAX_NAME}}}$");
        serde_json::json!({
            "type": "object",
            "properties": {
                "object": {"type": "string", "pattern": object,
                    "description": "The CRM object type (`contacts`, `tickets`, ...) or a custom object's objectTypeId, fully qualified name or name; or reference data: `owners`, `pipelines:<objectType>`. Default `contacts`."},
                "properties": {"type": ["array", "null"], "minItems": 1, "maxItems": MAX_PROPERTIES,
                    "items": {"type": "string", "pattern": name},
                    "description": "The properties to read. Default: every property the account defines for the type, discovered at each run."},
                "associations": {"type": ["array", "null"], "minItems": 1, "maxItems": MAX_ASSOCIATIONS,
                    "items": {"type": "string", "pattern": name},
                    "description": "The object types whose links each record carries in `data.associations`. Default: none. Reference data (owners, pipelines) has none: ignored there."},
                "refresh_secs": {"type": ["integer", "null"],
                    "minimum": REFRESH_SECS.start(), "maximum": REFRESH_SECS.end(),
                    "description": "How often every record of a stream with associations or a calculated property (rollups, days to close, time in stage) is read again, for what changed without moving its modification time. Default 86400. Not with associations_refresh_secs."},
                "associations_refresh_secs": {"type": ["integer", "null"],
                    "minimum": REFRESH_SECS.start(), "maximum": REFRESH_SECS.end(),
                    "deprecated": true,
                    "description": "The old name of refresh_secs, still accepted; written back as refresh_secs."},
                "sweep_secs": {"type": ["integer", "null"],
                    "minimum": REFRESH_SECS.start(), "maximum": REFRESH_SECS.end(),
                    "description": "How often a reconciliation sweep compares the source's ids and modification times with the store's and repairs the difference (missing, stale, deleted for good). Default 86400."},
                "on_permanent_delete": {"type": ["string", "null"], "enum": ["archive", "purge", null],
                    "description": "What a record HubSpot deleted for good (a GDPR delete, the recycle bin emptied) becomes when a sweep or a full read finds it gone: `archive` (default) keeps it archived with `deleted_permanently: true`; `purge` removes it and its links from the store, and also removes archived records HubSpot no longer lists at all (not those merged away)."},
            },
            "additionalProperties": false,
            // `refresh_secs` under one of its names, not both.
            "not": {
                "properties": {
                    "refresh_secs": {"type": "integer"},
                    "associations_refresh_secs": {"type": "integer"},
                },
                "required": ["refresh_secs", "associations_refresh_secs"],
            },
        })
    }
}

/// Builds the HubSpot source of every `hubspot` stream a worker is given, all from one account:
/// they share its rate limits, so three streams together stay inside the account's budget.
///
/// ```
/// use std::sync::Arc;
/// use weld_pipeline::source::Sources;
/// use weld_pipeline_hubspot::{HubSpotAccount, HubSpotSources, Token};
///
/// let account = HubSpotAccount::new("https://api.hubapi.com", Token::new("pat-..."));
/// let sources = Sources::new().with(Arc::new(HubSpotSources::new(account)));
/// assert_eq!(sources.kinds(), ["hubspot"]);
/// ```
#[derive(Debug)]
pub struct HubSpotSources {
    account: Arc<HubSpotAccount>,
    limits: AccountLimits,
}

impl HubSpotSources {
    /// Sources reading from `account` (its base URL, token, limits and settle delay; each stream
    /// sets its own object type and properties).
    pub fn new(account: HubSpotAccount) -> Self {
        HubSpotSources {
            limits: AccountLimits::new(&account),
            account: Arc::new(account),
        }
    }
}

impl SourceKind for HubSpotSources {
    fn kind(&self) -> &str {
        KIND
    }

    fn check(&self, spec: &SourceSpec) -> Result<SourceSpec, Error> {
        HubSpotKind.check(spec)
    }

    fn params_schema(&self) -> serde_json::Value {
        HubSpotKind.params_schema()
    }

    fn same_records(&self, stored: &SourceSpec, asked: &SourceSpec) -> bool {
        HubSpotKind.same_records(stored, asked)
    }
}

impl SourceFactory for HubSpotSources {
    fn source(&self, _stream: &StreamName, spec: &SourceSpec) -> Result<Arc<dyn Source>, Error> {
        let params = HubSpotParams::from_spec(spec)?;
        let refresh = params.refresh();
        let object = HubSpotObject {
            object_type: params.object,
            properties: params.properties,
            associations: params.associations.unwrap_or_default(),
            refresh: refresh.map_or(super::config::REFRESH, std::time::Duration::from_secs),
            sweep_every: params
                .sweep_secs
                .map_or(super::config::SWEEP_EVERY, std::time::Duration::from_secs),
            on_permanent_delete: params.on_permanent_delete.unwrap_or_default(),
        };
        Ok(Arc::new(Pages::new(HubSpotPages::with_limits(
            self.account.clone(),
            object,
            &self.limits,
        )?)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: serde_json::Value) -> SourceSpec {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn params_default_to_contacts_with_every_property() {
        let params =
            HubSpotParams::from_spec(&spec(serde_json::json!({"kind": "hubspot"}))).unwrap();
        assert_eq!(params.object, "contacts");
        assert_eq!(params.properties, None);
    }

    #[test]
    fn refresh_secs_is_read_under_its_new_name_or_its_old_one_and_written_back_as_the_new() {
        for name in ["refresh_secs", "associations_refresh_secs"] {
            let given = spec(serde_json::json!({"kind": "hubspot", name: 3600}));
            assert_eq!(
                HubSpotParams::from_spec(&given).unwrap().refresh(),
                Some(3600)
            );
            let checked = HubSpotKind.check(&given).unwrap();
            assert_eq!(checked.params["refresh_secs"], 3600, "{name}");
            assert!(!checked.params.contains_key("associations_refresh_secs"));
        }
        let neither = spec(serde_json::json!({"kind": "hubspot"}));
        assert_eq!(HubSpotParams::from_spec(&neither).unwrap().refresh(), None);
        assert!(!HubSpotKind
            .check(&neither)
            .unwrap()
            .params
            .contains_key("refresh_secs"));
    }

    #[test]
    fn on_permanent_delete_reads_archive_or_purge_and_is_written_back() {
        for (value, expected) in [
            ("archive", OnPermanentDelete::Archive),
            ("purge", OnPermanentDelete::Purge),
        ] {
            let given = spec(serde_json::json!({"kind": "hubspot", "on_permanent_delete": value}));
            let params = HubSpotParams::from_spec(&given).unwrap();
            assert_eq!(params.on_permanent_delete, Some(expected));
            let checked = HubSpotKind.check(&given).unwrap();
            assert_eq!(checked.params["on_permanent_delete"], value);
        }
        let default = spec(serde_json::json!({"kind": "hubspot"}));
        assert_eq!(
            HubSpotParams::from_spec(&default)
                .unwrap()
                .on_permanent_delete,
            None
        );
        assert_eq!(OnPermanentDelete::default(), OnPermanentDelete::Archive);
        // The schema offers what the parser takes.
        let schema = HubSpotKind.params_schema();
        assert_eq!(
            schema["properties"]["on_permanent_delete"]["enum"],
            serde_json::json!(["archive", "purge", null])
        );
        assert!(schema["properties"]["refresh_secs"].is_object());
    }

    #[test]
    fn bad_params_are_refused_with_what_is_wrong() {
        for (json, says) in [
            (
                serde_json::json!({"kind": "salesforce"}),
                "unknown source kind",
            ),
            (
                serde_json::json!({"kind": "hubspot", "objekt": "deals"}),
                "unknown field",
            ),
            (
                serde_json::json!({"kind": "hubspot", "object": "a/b"}),
                "not a HubSpot name",
            ),
            (
                serde_json::json!({"kind": "hubspot", "properties": []}),
                "1 to",
            ),
            (
                serde_json::json!({"kind": "hubspot", "properties": ["e&mail"]}),
                "not a HubSpot name",
            ),
            (
                serde_json::json!({"kind": "hubspot", "object": 3}),
                "invalid type",
            ),
            (
                serde_json::json!({"kind": "hubspot", "refresh_secs": 3600, "associations_refresh_secs": 3600}),
                "give refresh_secs only",
            ),
            (
                serde_json::json!({"kind": "hubspot", "refresh_secs": 59}),
                "refresh_secs must be 60 to",
            ),
            (
                serde_json::json!({"kind": "hubspot", "associations_refresh_secs": 0}),
                "associations_refresh_secs must be 60 to",
            ),
            (
                serde_json::json!({"kind": "hubspot", "on_permanent_delete": "shred"}),
                "unknown variant `shred`, expected `archive` or `purge`",
            ),
        ] {
            let error = HubSpotParams::from_spec(&spec(json.clone())).unwrap_err();
            assert!(matches!(error, Error::Invalid(_)), "{json}: {error}");
            assert!(error.to_string().contains(says), "{json}: {error}");
        }
    }
}
