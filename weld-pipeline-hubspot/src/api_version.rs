//! HubSpot's API versions and the path of every endpoint the source calls in each: one table.
//!
//! HubSpot moved its CRM API from numbered versions (`/crm/v3/objects/contacts`,
//! `/crm/v4/associations/...`) to dated ones (`/crm/objects/2026-03/contacts`): a new version
//! every March and September, each supported for 18 months. The v4 endpoints lose support on
//! March 30, 2027 and v1-v3 in September 2027, so a source runs on a dated version by default;
//! `v3` stays selectable while HubSpot serves it.
//!
//! Every path lives in [`Paths`], one row per family: the numbered paths of today, and the
//! dated paths, whose templates take the version. A new dated version with the same paths is
//! one more [`ApiVersion`] variant; one whose paths move is one more row.

use std::fmt;
use std::str::FromStr;

use weld_pipeline::Error;

/// A HubSpot API version: [`ApiVersion::V2026_03`] (the default) or the numbered paths of
/// [`ApiVersion::V3`]. Written and parsed as HubSpot writes it: `2026-03`, `2026-09`, `v3`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ApiVersion {
    /// The numbered paths (`/crm/v3/...`, and `/crm/v4/...` for associations), supported by
    /// HubSpot until March 2027 (v4) and September 2027 (v3).
    V3,
    /// The dated version of March 2026, generally available since March 30, 2026.
    #[default]
    V2026_03,
    /// The dated version of September 2026, generally available since September 8, 2026. Its
    /// read endpoints answer as 2026-03's do.
    V2026_09,
}

impl ApiVersion {
    /// Every version the source speaks, oldest first.
    pub const ALL: [ApiVersion; 3] = [ApiVersion::V3, ApiVersion::V2026_03, ApiVersion::V2026_09];

    /// The version as HubSpot writes it in paths and settings: `v3`, `2026-03`.
    pub fn as_str(self) -> &'static str {
        match self {
            ApiVersion::V3 => "v3",
            ApiVersion::V2026_03 => "2026-03",
            ApiVersion::V2026_09 => "2026-09",
        }
    }

    /// Whether this is a dated version (as opposed to the numbered paths).
    pub fn is_dated(self) -> bool {
        self != ApiVersion::V3
    }

    /// The path of `endpoint` in this version, without the base URL or a query.
    pub fn path(self, endpoint: Endpoint<'_>) -> String {
        let paths = if self.is_dated() { &DATED } else { &NUMBERED };
        let template = match endpoint {
            Endpoint::Objects { .. } => paths.objects,
            Endpoint::Record { .. } => paths.record,
            Endpoint::Search { .. } => paths.search,
            Endpoint::BatchRead { .. } => paths.batch_read,
            Endpoint::Properties { .. } => paths.properties,
            Endpoint::Schemas => paths.schemas,
            Endpoint::Owners => paths.owners,
            Endpoint::Pipelines { .. } => paths.pipelines,
            Endpoint::LinksBatchRead { .. } => paths.links_batch_read,
            Endpoint::RecordLinks { .. } => paths.record_links,
            Endpoint::LinkLabels { .. } => paths.link_labels,
        };
        fill(template, self.as_str(), endpoint)
    }
}

impl fmt::Display for ApiVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ApiVersion {
    type Err = Error;

    /// # Errors
    ///
    /// [`Error::Invalid`] for a version the source does not speak, naming those it does.
    fn from_str(text: &str) -> Result<Self, Error> {
        ApiVersion::ALL
            .into_iter()
            .find(|version| version.as_str() == text.trim())
            .ok_or_else(|| {
                let known: Vec<&str> = ApiVersion::ALL.iter().map(|v| v.as_str()).collect();
                Error::Invalid(format!(
                    "unknown HubSpot API version {text:?}; known: {}",
                    known.join(", ")
                ))
            })
    }
}

impl serde::Serialize for ApiVersion {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for ApiVersion {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// An endpoint of HubSpot's CRM API, with what its path names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint<'a> {
    /// The list of an object type's records (`GET`).
    Objects {
        /// The object type: `contacts`, `0-3`, `2-1234567`, ...
        object_type: &'a str,
    },
    /// One record (`GET`).
    Record {
        /// The object type.
        object_type: &'a str,
        /// The record's id.
        id: &'a str,
    },
    /// Search (`POST`).
    Search {
        /// The object type.
        object_type: &'a str,
    },
    /// Records by id (`POST`).
    BatchRead {
        /// The object type.
        object_type: &'a str,
    },
    /// An object type's property definitions (`GET`).
    Properties {
        /// The object type.
        object_type: &'a str,
    },
    /// The account's custom object schemas (`GET`).
    Schemas,
    /// The account's owners (`GET`).
    Owners,
    /// An object type's pipelines and their stages (`GET`).
    Pipelines {
        /// The object type.
        object_type: &'a str,
    },
    /// The links of many records to one other type (`POST`).
    LinksBatchRead {
        /// The records' type.
        from: &'a str,
        /// The linked type.
        to: &'a str,
    },
    /// The links of one record to one other type (`GET`).
    RecordLinks {
        /// The record's type.
        object_type: &'a str,
        /// The record's id.
        id: &'a str,
        /// The linked type.
        to: &'a str,
    },
    /// The labels links between two types may carry (`GET`).
    LinkLabels {
        /// One type.
        from: &'a str,
        /// The other.
        to: &'a str,
    },
}

/// The path templates of one family of versions. `{version}`, `{type}`, `{id}`, `{from}` and
/// `{to}` are filled from the version and the [`Endpoint`].
struct Paths {
    objects: &'static str,
    record: &'static str,
    search: &'static str,
    batch_read: &'static str,
    properties: &'static str,
    schemas: &'static str,
    owners: &'static str,
    pipelines: &'static str,
    links_batch_read: &'static str,
    record_links: &'static str,
    link_labels: &'static str,
}

/// `v3`: the numbered paths, associations on v4.
const NUMBERED: Paths = Paths {
    objects: "/crm/v3/objects/{type}",
    record: "/crm/v3/objects/{type}/{id}",
    search: "/crm/v3/objects/{type}/search",
    batch_read: "/crm/v3/objects/{type}/batch/read",
    properties: "/crm/v3/properties/{type}",
    schemas: "/crm/v3/schemas",
    owners: "/crm/v3/owners",
    pipelines: "/crm/v3/pipelines/{type}",
    links_batch_read: "/crm/v4/associations/{from}/{to}/batch/read",
    record_links: "/crm/v4/objects/{type}/{id}/associations/{to}",
    link_labels: "/crm/associations/v4/{from}/{to}/labels",
};

/// The dated versions (`2026-03`, `2026-09`): the version follows the API's name.
const DATED: Paths = Paths {
    objects: "/crm/objects/{version}/{type}",
    record: "/crm/objects/{version}/{type}/{id}",
    search: "/crm/objects/{version}/{type}/search",
    batch_read: "/crm/objects/{version}/{type}/batch/read",
    properties: "/crm/properties/{version}/{type}",
    schemas: "/crm-object-schemas/{version}/schemas",
    owners: "/crm/owners/{version}",
    pipelines: "/crm/pipelines/{version}/{type}",
    links_batch_read: "/crm/associations/{version}/{from}/{to}/batch/read",
    record_links: "/crm/objects/{version}/{type}/{id}/associations/{to}",
    link_labels: "/crm/associations/{version}/{from}/{to}/labels",
};

/// `template` with its placeholders filled. The names come checked to letters, digits, `_`
/// and `-` (see the stream's parameters), so none needs escaping.
fn fill(template: &str, version: &str, endpoint: Endpoint<'_>) -> String {
    let (object_type, id, from, to) = match endpoint {
        Endpoint::Objects { object_type }
        | Endpoint::Search { object_type }
        | Endpoint::BatchRead { object_type }
        | Endpoint::Properties { object_type }
        | Endpoint::Pipelines { object_type } => (object_type, "", "", ""),
        Endpoint::Record { object_type, id } => (object_type, id, "", ""),
        Endpoint::RecordLinks {
            object_type,
            id,
            to,
        } => (object_type, id, "", to),
        Endpoint::LinksBatchRead { from, to } | Endpoint::LinkLabels { from, to } => {
            ("", "", from, to)
        }
        Endpoint::Schemas | Endpoint::Owners => ("", "", "", ""),
    };
    template
        .replace("{version}", version)
        .replace("{type}", object_type)
        .replace("{id}", id)
        .replace("{from}", from)
        .replace("{to}", to)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every_endpoint() -> Vec<Endpoint<'static>> {
        vec![
            Endpoint::Objects {
                object_type: "contacts",
            },
            Endpoint::Record {
                object_type: "contacts",
                id: "51",
            },
            Endpoint::Search {
                object_type: "contacts",
            },
            Endpoint::BatchRead {
                object_type: "contacts",
            },
            Endpoint::Properties {
                object_type: "contacts",
            },
            Endpoint::Schemas,
            Endpoint::Owners,
            Endpoint::Pipelines {
                object_type: "deals",
            },
            Endpoint::LinksBatchRead {
                from: "contacts",
                to: "companies",
            },
            Endpoint::RecordLinks {
                object_type: "contacts",
                id: "51",
                to: "companies",
            },
            Endpoint::LinkLabels {
                from: "contacts",
                to: "companies",
            },
        ]
    }

    #[test]
    fn the_dated_paths_are_hubspots_2026_03_paths() {
        let paths: Vec<String> = every_endpoint()
            .into_iter()
            .map(|e| ApiVersion::V2026_03.path(e))
            .collect();
        assert_eq!(
            paths,
            [
                "/crm/objects/2026-03/contacts",
                "/crm/objects/2026-03/contacts/51",
                "/crm/objects/2026-03/contacts/search",
                "/crm/objects/2026-03/contacts/batch/read",
                "/crm/properties/2026-03/contacts",
                "/crm-object-schemas/2026-03/schemas",
                "/crm/owners/2026-03",
                "/crm/pipelines/2026-03/deals",
                "/crm/associations/2026-03/contacts/companies/batch/read",
                "/crm/objects/2026-03/contacts/51/associations/companies",
                "/crm/associations/2026-03/contacts/companies/labels",
            ]
        );
    }

    #[test]
    fn the_numbered_paths_are_todays_v3_and_v4_paths() {
        let paths: Vec<String> = every_endpoint()
            .into_iter()
            .map(|e| ApiVersion::V3.path(e))
            .collect();
        assert_eq!(
            paths,
            [
                "/crm/v3/objects/contacts",
                "/crm/v3/objects/contacts/51",
                "/crm/v3/objects/contacts/search",
                "/crm/v3/objects/contacts/batch/read",
                "/crm/v3/properties/contacts",
                "/crm/v3/schemas",
                "/crm/v3/owners",
                "/crm/v3/pipelines/deals",
                "/crm/v4/associations/contacts/companies/batch/read",
                "/crm/v4/objects/contacts/51/associations/companies",
                "/crm/associations/v4/contacts/companies/labels",
            ]
        );
    }

    #[test]
    fn every_path_of_every_version_is_filled() {
        for version in ApiVersion::ALL {
            for endpoint in every_endpoint() {
                let path = version.path(endpoint);
                assert!(path.starts_with('/'), "{path}");
                assert!(!path.contains('{') && !path.contains("//"), "{path}");
            }
        }
        assert_eq!(
            ApiVersion::V2026_09.path(Endpoint::Owners),
            "/crm/owners/2026-09"
        );
    }

    #[test]
    fn versions_parse_as_hubspot_writes_them_and_nothing_else() {
        assert_eq!(ApiVersion::default(), ApiVersion::V2026_03);
        for version in ApiVersion::ALL {
            assert_eq!(version.as_str().parse::<ApiVersion>().unwrap(), version);
            let json = serde_json::to_string(&version).unwrap();
            assert_eq!(serde_json::from_str::<ApiVersion>(&json).unwrap(), version);
        }
        for wrong in ["2026-3", "v4", "V3", "", "2027-03"] {
            let error = wrong.parse::<ApiVersion>().unwrap_err().to_string();
            assert!(error.contains("2026-03") && error.contains("v3"), "{error}");
        }
    }
}
