//! The source's configuration: the account (where HubSpot is, the token, the limits) and the
//! object one stream reads.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::api_version::ApiVersion;

/// A private-app token. Sent as `Authorization: Bearer`; `Debug` shows it redacted, and no
/// error or log line carries it.
#[derive(Clone)]
pub struct Token(Arc<str>);

impl Token {
    /// Wraps a token (the value of `HUBSPOT_ACCESS_TOKEN`).
    pub fn new(token: impl AsRef<str>) -> Self {
        Token(token.as_ref().into())
    }

    pub(crate) fn bearer(&self) -> String {
        format!("Bearer {}", self.0)
    }

    /// `text` with this token, and whatever follows a `Bearer `, replaced by `<redacted>`: for
    /// text HubSpot (or a proxy before it) wrote, which may echo the request's credentials.
    pub(crate) fn redact(&self, text: &str) -> String {
        let mut text = if self.0.is_empty() {
            text.to_string()
        } else {
            text.replace(&*self.0, "<redacted>")
        };
        let mut from = 0;
        while let Some(at) = text[from..].find("Bearer ") {
            let start = from + at + "Bearer ".len();
            let end = text[start..]
                .find(|c: char| c.is_whitespace() || c == '"' || c == '\'')
                .map_or(text.len(), |n| start + n);
            text.replace_range(start..end, "<redacted>");
            from = start + "<redacted>".len();
        }
        text
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// A HubSpot account as the source uses it: where its API is, the token, and how calls to it are
/// paced, paged and timed. Every stream of the account shares it (and its rate limits:
/// [`AccountLimits`](super::AccountLimits)); what each stream reads is its [`HubSpotObject`].
#[derive(Clone, Debug)]
pub struct HubSpotAccount {
    /// The API's base URL: `https://api.hubapi.com`, or a fake's.
    pub base_url: String,
    /// The private-app token.
    pub token: Token,
    /// The API version the source calls: a dated one (`2026-03`, the default) or `v3`.
    pub api_version: ApiVersion,
    /// How far behind now an incremental window ends. HubSpot's search index trails writes by
    /// seconds: a window that reached the present could step past records that become searchable
    /// a moment later. Default 30 s.
    pub settle_delay: Duration,
    /// Records per list page. HubSpot's maximum is 100.
    pub list_limit: u32,
    /// Records per search page. HubSpot's maximum is 200.
    pub search_limit: u32,
    /// The longest list URL sent; a longer property list is split across requests and merged by
    /// id (HubSpot answers 414 past its own limit). Default 2,000 bytes, safe behind any proxy.
    pub max_url_bytes: usize,
    /// One request's deadline. Default 30 s.
    pub timeout: Duration,
    /// Calls per 10 s until HubSpot's headers say otherwise (100 for free and starter accounts;
    /// the source adopts the limit the headers report).
    pub per_ten_seconds: u32,
    /// Search calls per second: HubSpot allows 5; the source stays at 4 to leave a margin.
    pub searches_per_second: u32,
    /// The largest answer body read from HubSpot; a longer one (by `Content-Length` or as it
    /// arrives) ends the call with [`HubSpotError::TooLarge`](super::HubSpotError::TooLarge)
    /// naming the call, after reading at most this much. Default 64 MiB: a real page is a few MiB
    /// at most (200 search results of 85 KB email bodies each are 17 MB), and the bound keeps a
    /// broken or hostile answer (an endless body) from taking the worker's memory.
    pub max_body_bytes: usize,
    /// The most properties a stream reads when it discovers them (no `properties` list): an
    /// object defining more fails the run with a clear error before any page is read. HubSpot
    /// lets an account define 1,000 custom properties per object beside its few hundred own, so
    /// the default 4,000 is never reached by a real portal; past it, every list page would
    /// take dozens of calls of the account's shared budget, holding up its other streams.
    pub max_properties: usize,
}

impl HubSpotAccount {
    /// The account at `base_url`, called with `token`, with the defaults above.
    pub fn new(base_url: impl Into<String>, token: Token) -> Self {
        HubSpotAccount {
            base_url: base_url.into(),
            token,
            api_version: ApiVersion::default(),
            settle_delay: Duration::from_secs(30),
            list_limit: 100,
            search_limit: 200,
            max_url_bytes: 2_000,
            timeout: Duration::from_secs(30),
            per_ten_seconds: 100,
            searches_per_second: 4,
            max_body_bytes: MAX_BODY_BYTES,
            max_properties: MAX_DISCOVERED_PROPERTIES,
        }
    }
}

/// The default of [`HubSpotAccount::max_body_bytes`]: 64 MiB.
pub const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;

/// The default of [`HubSpotAccount::max_properties`]: 4,000.
pub const MAX_DISCOVERED_PROPERTIES: usize = 4_000;

/// What one stream reads from its account: an object type, its properties, and the types
/// its records' associations are read to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HubSpotObject {
    /// The object type: `contacts`, `companies`, `deals`, or any other type's name or id.
    pub object_type: String,
    /// Properties to read; `None` for every property the account defines for the type,
    /// discovered at the start of each run.
    pub properties: Option<Vec<String>>,
    /// The types whose links each record carries in `data.associations` (`companies`,
    /// `deals`, ...); empty for none.
    pub associations: Vec<String>,
    /// How often every record is read again, for what changes at HubSpot without moving a
    /// record's modification time, so that no incremental window sees it: the links (HubSpot's
    /// association changes do not move it) and calculated properties (a rollup, a "days to
    /// close", a "time in stage": HubSpot recomputes them without an edit). Applies to a stream
    /// that reads associations or whose property set has a calculated property (the
    /// definitions say `calculated: true`); the others never need it. Default one day.
    pub refresh: Duration,
    /// How often a reconciliation sweep compares HubSpot's ids and modification times with what
    /// the store holds, and repairs the difference. Default one day.
    pub sweep_every: Duration,
    /// What a record HubSpot deleted for good becomes in the store, when a sweep or a full
    /// read finds it gone from every listing. Default [`OnPermanentDelete::Archive`].
    pub on_permanent_delete: OnPermanentDelete,
}

/// What a record HubSpot deleted for good (a GDPR delete, the recycle bin emptied) becomes in
/// the store: the `on_permanent_delete` stream setting.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OnPermanentDelete {
    /// Kept, archived, with `"deleted_permanently": true` written over the stored document (an
    /// amendment): the warehouse keeps its history. The default.
    #[default]
    Archive,
    /// Removed, with its links ([`Record::purge`](weld_pipeline::Record::purge)): what a privacy
    /// deletion asks of every copy. Also removes the records held archived that HubSpot no
    /// longer lists at all (a GDPR delete of an archived record), except those merged away.
    Purge,
}

/// The default of [`HubSpotObject::refresh`]: a day.
pub const REFRESH: Duration = Duration::from_secs(86_400);

/// The default of [`HubSpotObject::sweep_every`]: a day.
pub const SWEEP_EVERY: Duration = Duration::from_secs(86_400);

impl HubSpotObject {
    /// `object_type` with every property it has, and no associations.
    pub fn new(object_type: impl Into<String>) -> Self {
        HubSpotObject {
            object_type: object_type.into(),
            properties: None,
            associations: Vec::new(),
            refresh: REFRESH,
            sweep_every: SWEEP_EVERY,
            on_permanent_delete: OnPermanentDelete::Archive,
        }
    }

    /// The same, with the links to `types` in each record.
    pub fn with_associations<S: Into<String>>(
        mut self,
        types: impl IntoIterator<Item = S>,
    ) -> Self {
        self.associations = types.into_iter().map(Into::into).collect();
        self
    }

    /// The change-tracking property searched on: `lastmodifieddate` for contacts,
    /// `hs_lastmodifieddate` for the others.
    pub fn modified_property(&self) -> &'static str {
        if self.object_type == "contacts" {
            "lastmodifieddate"
        } else {
            "hs_lastmodifieddate"
        }
    }
}
