//! How the fake behaves, the faults it can be told to inject, and what it reports.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// How the fake behaves.
#[derive(Clone, Debug)]
pub struct FakeConfig {
    /// The private-app token it accepts.
    pub token: String,
    /// The seed of the generated data set.
    pub seed: u64,
    /// Objects generated per type.
    pub contacts: usize,
    /// Companies generated.
    pub companies: usize,
    /// Deals generated.
    pub deals: usize,
    /// Records of each other type generated (tickets, products, line items, quotes, calls,
    /// emails, meetings, notes, tasks and the custom object).
    pub others: usize,
    /// Active owners (three deactivated ones come beside them).
    pub owners: usize,
    /// Records of each type sharing one modification time (more than a page of search).
    pub big_tie: usize,
    /// Non-search calls allowed per rolling 10 s, or none for no limit.
    pub per_ten_seconds: Option<u32>,
    /// Search calls allowed per second, or none for no limit. HubSpot's is 5.
    pub search_per_second: Option<u32>,
    /// Whether 429s carry `Retry-After`.
    pub retry_after: bool,
    /// Object types the token may not read (403).
    pub forbidden: Vec<String>,
    /// The longest request URL, in bytes; longer is a 414.
    pub max_url_bytes: usize,
    /// Custom properties each object type defines (`custom_property_000`, ...), of every type,
    /// each set on about a quarter of the records. A real portal has hundreds.
    pub custom_properties: usize,
    /// The most links one association batch read returns per record before `paging.next`.
    pub association_page: usize,
    /// The round trip every CRM request takes: half before the fake admits it (rate limits
    /// count it on arrival), half before its answer goes out. Zero on loopback; a customer's
    /// cloud sees about 150 ms to HubSpot.
    pub latency: std::time::Duration,
    /// Whether the legacy paths (`/crm/v3/...`, `/crm/v4/...`) are still served, or answer
    /// 410 as after HubSpot's sunset (v4 on 2027-03-30, v1-v3 in September 2027). A test that
    /// must prove a client uses only dated paths retires them; the dated paths are always served.
    pub legacy: Legacy,
}

/// Whether the fake still serves HubSpot's legacy paths.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Legacy {
    /// Served as HubSpot serves them until their sunset.
    #[default]
    Served,
    /// Every legacy CRM path answers 410 with HubSpot's error body. HubSpot has not published
    /// what a retired path will answer: this is the fake's choice, not HubSpot's documented
    /// behaviour.
    Retired,
}

impl Default for FakeConfig {
    fn default() -> Self {
        FakeConfig {
            token: "fake-token".into(),
            seed: 7,
            contacts: 1_000,
            companies: 100,
            deals: 100,
            others: 60,
            owners: 25,
            big_tie: 0,
            per_ten_seconds: None,
            search_per_second: Some(5),
            retry_after: true,
            forbidden: vec![],
            max_url_bytes: 8_192,
            custom_properties: 300,
            association_page: 500,
            latency: std::time::Duration::ZERO,
            legacy: Legacy::Served,
        }
    }
}

/// A fault to inject into the next matching requests.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Fault {
    /// Answer with this status and HubSpot's error body.
    Status {
        /// The status (502, 503, 504, 521, 523, 524, 400, ...).
        status: u16,
    },
    /// A `TEN_SECONDLY_ROLLING` 429, with `Retry-After` when given.
    RateLimited {
        /// Seconds for `Retry-After`, or none to leave it out.
        retry_after: Option<u64>,
    },
    /// A `DAILY` 429: the day's quota is spent.
    Daily,
    /// Answer correctly, but only after this long.
    Slow {
        /// The delay in milliseconds.
        ms: u64,
    },
    /// A 200 whose body is not JSON.
    Garbage,
    /// A 200 whose JSON body is cut short.
    Truncated,
    /// A 200 whose chunked body never ends: the page's JSON opened, then padding forever.
    Endless,
    /// A 200 whose first result carries, among its properties, a value nested `depth` arrays
    /// deep (`"nested":[[[...]]]`): valid JSON some databases cannot take.
    Nested {
        /// How many arrays deep.
        depth: usize,
    },
}

/// A fault and how many requests it hits, and which (`list`, `search` or any).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultPlan {
    /// What goes wrong: its fields sit beside `count` and `only` in the plan's JSON.
    #[serde(flatten)]
    pub fault: Fault,
    /// How many requests it hits.
    #[serde(default = "one")]
    pub count: u32,
    /// `list`, `search`, or absent for both.
    #[serde(default)]
    pub only: Option<String>,
}

fn one() -> u32 {
    1
}

/// What the fake served.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Requests to the CRM routes.
    pub requests: u64,
    /// Of which search requests.
    pub searches: u64,
    /// Of which calls of an object's archived listing (`archived=true`), each part of a page
    /// split across several URLs counted.
    pub archived_lists: u64,
    /// Responses by status.
    pub by_status: BTreeMap<u16, u64>,
    /// 429 responses (the rate limits and injected ones).
    pub rate_limited: u64,
    /// Records served in list and search results.
    pub records_served: u64,
    /// Of the requests, those that came by a legacy path (`/crm/v3/...`, `/crm/v4/...`),
    /// refused ones included: zero proves a client never called one.
    #[serde(default)]
    pub legacy_requests: u64,
    /// Of the requests, those that came by a dated path (`/crm/objects/2026-03/...`, ...).
    #[serde(default)]
    pub dated_requests: u64,
}

/// Changes to make between runs.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Mutation {
    /// The object type.
    pub object: String,
    /// Records to modify, distinct, chosen at random. The i-th record modified (or created)
    /// gets a modification time i ms before now: the change becomes visible up to `modify` ms
    /// after the time it carries, as HubSpot's search index trails its writes, so a source
    /// whose window ends at "now" (no settle delay) misses the ones stamped before a window it
    /// already searched. A settle delay of a second covers a change of 1,000 records.
    #[serde(default)]
    pub modify: usize,
    /// The value `modify` writes (contacts' `firstname`, the first plain property of other
    /// types): `Changed<i>` for the i-th record when absent. Anything a user can type into
    /// HubSpot, markup included.
    #[serde(default)]
    pub value: Option<String>,
    /// Records to create.
    #[serde(default)]
    pub create: usize,
    /// Records to archive (their modification time does not change).
    #[serde(default)]
    pub archive: usize,
    /// Whether all modified and created records share one modification time.
    #[serde(default)]
    pub tie: bool,
    /// A custom property to define, with a value on every live record; modification times do
    /// not change.
    #[serde(default)]
    pub add_property: Option<String>,
    /// Live records whose links to `relink_to` are replaced by one link to another record of
    /// that type; modification times do not change.
    #[serde(default)]
    pub relink: usize,
    /// The type `relink` links to: `companies` when absent.
    #[serde(default)]
    pub relink_to: Option<String>,
    /// Pairs of live records to merge, as HubSpot merges them: the secondary vanishes (from the
    /// lists, search and `archived=true`), the primary names it in `hs_merged_object_ids`,
    /// takes its links, and is modified.
    #[serde(default)]
    pub merge: usize,
    /// Live records to delete for good (a GDPR delete, or the recycle bin emptied): they vanish
    /// from every listing, their links with them.
    #[serde(default)]
    pub delete: usize,
    /// Live records whose calculated properties (the definitions with `calculated: true`)
    /// HubSpot recomputes: each gets a new value, its modification time unchanged, so no
    /// incremental window sees it.
    #[serde(default)]
    pub recalculate: usize,
    /// Archived records to delete for good (the recycle bin emptied after 90 days, a GDPR
    /// delete of an archived record): they vanish from the archived listing too.
    #[serde(default)]
    pub delete_archived: usize,
}

/// A record as the dump shows it: everything the fake holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Dumped {
    /// The record's id, as the API shows it (a number, in text).
    pub id: String,
    /// The modification time, ISO-8601.
    pub updated_at: String,
    /// Whether it is archived.
    pub archived: bool,
    /// Every property.
    pub properties: BTreeMap<String, Option<String>>,
}
