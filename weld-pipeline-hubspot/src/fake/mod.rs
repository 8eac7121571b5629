//! A HubSpot CRM stand-in: an axum server answering list and search exactly as HubSpot's CRM
//! API does (checked in CI against HubSpot's official Python clients: `hubspot-api-client` on
//! the legacy paths, `hubspot-sdk` on the dated ones), from a seeded, generated data set, with
//! HubSpot's rate limits and faults on demand.
//!
//! # Two families of paths, one implementation
//!
//! HubSpot moved its CRM API to date-based versions on 2026-03-30; its v4 paths lose support on
//! 2027-03-30 and v1-v3 in September 2027. The fake serves both families, each route of one
//! family going to the same handler as its twin (the table is the `versions` module, kept apart
//! from the source's on purpose):
//!
//! | what | legacy | dated (2026-03) |
//! |---|---|---|
//! | list, one record, search, batch read | `/crm/v3/objects/{type}`, `.../{id}`, `.../search`, `.../batch/read` | `/crm/objects/2026-03/{type}`, `.../{id}`, `.../search`, `.../batch/read` |
//! | one record's links | `GET /crm/v4/objects/{type}/{id}/associations/{to}` | `GET /crm/objects/2026-03/{type}/{id}/associations/{to}` |
//! | links batch read | `POST /crm/v4/associations/{from}/{to}/batch/read` | `POST /crm/associations/2026-03/{from}/{to}/batch/read` |
//! | link types | `GET /crm/associations/v4/{from}/{to}/labels` | `GET /crm/associations/2026-03/{from}/{to}/labels` |
//! | properties | `GET /crm/v3/properties/{type}` | `GET /crm/properties/2026-03/{type}` |
//! | schemas | `GET /crm/v3/schemas`, `GET /crm-object-schemas/v3/schemas` | `GET /crm-object-schemas/2026-03/schemas` |
//! | owners | `GET /crm/v3/owners` (and `/crm/v3/owners/`) | `GET /crm/owners/2026-03` |
//! | pipelines | `GET /crm/v3/pipelines/{type}` | `GET /crm/pipelines/2026-03/{type}` |
//!
//! What differs is what HubSpot changed: dated records carry `url` (the fake writes no
//! `objectWriteTraceId`, which HubSpot puts only on writes), dated links carry `toObjectId` as
//! text (v4: a number), and dated error bodies are HubSpot's current shape (`subCategory` where
//! there is one, `context`, `errors[]` with details, `links`); 429s keep the rate limiter's
//! `errorType`/`policyName` body on both, the only 429 body HubSpot has shown. Every path takes
//! a type's name or its `objectTypeId` (`0-1` contacts, `0-2` companies, `0-3` deals, `0-5`
//! tickets, ...: HubSpot's own SDK sends deals as `0-3`). Owners carry `type: "PERSON"` and
//! `userIdIncludingInactive`, stages `writePermissions`, on both families, as HubSpot does.
//!
//! [`FakeConfig::legacy`] (or `POST /_admin/legacy {"retired":true}`) retires the legacy
//! family: each of its paths then answers 410 `API_VERSION_UNSUPPORTED` in HubSpot's current
//! error shape. HubSpot has not published what a retired path will answer; that 410 is the
//! fake's choice. [`Stats::legacy_requests`] and [`Stats::dated_requests`] count each family's
//! requests, so a test proves a client never called a legacy path.
//!
//! # Limits
//!
//! | limit | default | checked | past it |
//! |---|---|---|---|
//! | list `limit` | 10, at most 100 | on each list | 400 `VALIDATION_ERROR` |
//! | search `limit`; paging | 10, at most 200; `after` below 10,000 | on each search | 400 `VALIDATION_ERROR` |
//! | batch read inputs | 100 | on the body | 400 `VALIDATION_ERROR` |
//! | links batch read inputs; links per record | 1,000; [`FakeConfig::association_page`] (500) | on the body; per record, then `paging.next.after` | 400 `VALIDATION_ERROR`; the next page |
//! | one record's links `limit` | 500, at most 500 | on each call | 400 `VALIDATION_ERROR` |
//! | owners `limit` | 100, at most 500 | on each call | 400 `VALIDATION_ERROR` |
//! | request URL | [`FakeConfig::max_url_bytes`] (8,192 bytes) | on each CRM call | 414 |
//! | `POST /_admin/mutate` body | 64 MiB | as it arrives | 413 |
//! | calls per 10 s; searches per second | [`FakeConfig::per_ten_seconds`] (none); [`FakeConfig::search_per_second`] (5) | on each call | 429 `TEN_SECONDLY_ROLLING`; 429 `SECONDLY` |
//!
//! Other admin bodies take axum's default cap (2 MB, a 413 past it).
//!
//! # What it does, each as the real API does it
//!
//! (Paths below in their legacy form; the dated twin of each answers the same.)
//! - `GET /crm/v3/objects/{type}`: `limit` (default 10, max 100), `after` (the next id),
//!   `properties` (unknown names left out, known empty ones `null`), `archived=true` (only
//!   archived records); `paging.next` only when more follow.
//! - `POST /crm/v3/objects/{type}/search`: `filterGroups` (AND within a group, OR between),
//!   one sort rule (more is a 400), ties in an order the client cannot rely on (shuffled per
//!   request), `limit` up to 200, `after` an offset; paging past 10,000 results is a 400;
//!   archived records never appear.
//! - `POST /crm/v3/objects/{type}/batch/read`: records by id (at most 100), `archived=true` for
//!   archived ones; ids not found are named in `errors` of a 207. `GET /crm/v3/objects/{type}/{id}`:
//!   one record, a 404 `OBJECT_NOT_FOUND` when there is none.
//! - `GET /crm/v3/properties/{type}`: the type's property definitions (`name`, `label`,
//!   `type`, `fieldType`, `groupName`, `options`, `hubspotDefined` on HubSpot's own ones, ...):
//!   a portal's standard properties and [`FakeConfig::custom_properties`] custom ones of every
//!   type (`string`, `number`, `date`, `datetime`, `enumeration`, `bool`, `phone_number`),
//!   each set on about a quarter of the records. A property can be added at run time.
//! - Every CRM object type with the same list, search and properties endpoints: `tickets`,
//!   `products`, `line_items`, `quotes`, `calls`, `emails`, `meetings`, `notes`, `tasks`
//!   ([`FakeConfig::others`] of each), and a custom object (`GET /crm/v3/schemas`, and
//!   `/crm-object-schemas/v3/schemas` where HubSpot's Python client reads them, describe it:
//!   `cars`, `objectTypeId` `2-1234567`, `fullyQualifiedName` `p1234567_cars`; its records are
//!   served under the id and the fully qualified name).
//! - Associations: `POST /crm/v4/associations/{from}/{to}/batch/read` (see the `associations`
//!   module), one record's links and the link types (see the `links` module): every contact
//!   linked to a company, every third to a deal, deals to companies,
//!   tickets to contacts; links change at run time without touching modification times.
//! - Reference data: `GET /crm/v3/owners` (paged by `after`, `archived=true` for the
//!   deactivated ones; [`FakeConfig::owners`] active, three archived) and
//!   `GET /crm/v3/pipelines/{deals|tickets}` (two pipelines each, with their stages).
//! - Bearer token checked (401 `INVALID_AUTHENTICATION`); object types can be made forbidden
//!   (403 `MISSING_SCOPES`); a URL over the length limit is a 414.
//! - Rate limits: a rolling 10-second window on non-search calls with the
//!   `X-HubSpot-RateLimit-*` headers and `TEN_SECONDLY_ROLLING` 429s, and a 5-per-second search
//!   limit (`SECONDLY`, no headers); `Retry-After` sent or not, by configuration.
//! - A round trip of its own ([`FakeConfig::latency`], or at run time `POST /_admin/latency`
//!   with `{"ms":150}`): what a client in a customer's cloud sees, where paging one request at
//!   a time leaves most of the rate budget unused.
//! - Faults, by configuration or at run time (`POST /_admin/faults`): a status (5xx, 429 with or
//!   without `Retry-After`, a `DAILY` 429), a response slower than the client's timeout, truncated
//!   or invalid JSON, a body that never ends, a value nested thousands of arrays deep; each for
//!   the next N requests.
//! - Changes between runs (`POST /_admin/mutate`): records modified, created or archived
//!   (archiving does not bump the modification time, as in HubSpot; the changed records carry
//!   times up to a millisecond a record before the change becomes visible, as HubSpot's search
//!   index trails its writes: see [`Mutation::modify`]), a custom property added
//!   with a value on every live record, records linked to another record of a type instead
//!   of theirs (modification times untouched by the last two), pairs of records merged (the
//!   secondary vanishes everywhere, the primary names it in `hs_merged_object_ids` and is
//!   modified), records deleted for good (gone from every listing, `archived=true` too).
//! - What it served (`GET /_admin/stats`) and its whole data set (`GET /_admin/dump`), so a test
//!   compares the stored set to the fake's exactly.

mod admin;
mod admission;
mod associations;
mod batch;
mod config;
mod data;
mod definitions;
mod links;
mod list;
mod properties;
mod record;
mod reference;
mod search;
mod versions;
mod wire;

pub use config::{Dumped, FakeConfig, Fault, FaultPlan, Legacy, Mutation, Stats};

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use weld_pipeline::sync::Locked;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;

use data::{generate, ObjectSet};
use versions::Served;
use weld_pipeline::Timestamp;

/// An error answer, boxed: it is built rarely and a `Response` is large.
type Refusal = Box<Response>;

struct Fake {
    config: FakeConfig,
    objects: HashMap<String, ObjectSet>,
    links: associations::Links,
    /// Every merge: the type, the secondary (merged away) and the primary.
    merged: Vec<(String, u64, u64)>,
    owners: Vec<reference::Owner>,
    /// Pipelines by object type, as HubSpot answers them.
    pipelines: HashMap<String, Vec<serde_json::Value>>,
    faults: VecDeque<FaultPlan>,
    stats: Stats,
    calls: VecDeque<Instant>,
    searches: VecDeque<Instant>,
    rng: fastrand::Rng,
}

type Shared = Arc<Mutex<Fake>>;

/// A running fake. Dropping it stops the server.
#[derive(Debug)]
pub struct FakeHubSpot {
    addr: SocketAddr,
    state: Shared,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl std::fmt::Debug for Fake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fake")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl FakeHubSpot {
    /// Generates the data set and serves it on `addr` (`127.0.0.1:0` for a free port).
    ///
    /// # Errors
    ///
    /// When the address cannot be bound.
    pub async fn start(addr: &str, config: FakeConfig) -> std::io::Result<FakeHubSpot> {
        let mut rng = fastrand::Rng::with_seed(config.seed);
        let now = Timestamp::now().as_millis();
        let mut objects = HashMap::new();
        let others = data::OTHER_TYPES
            .iter()
            .map(|(object_type, _)| (*object_type, config.others));
        for (object_type, count) in [
            ("contacts", config.contacts),
            ("companies", config.companies),
            ("deals", config.deals),
        ]
        .into_iter()
        .chain(others)
        {
            objects.insert(
                object_type.to_string(),
                generate(
                    object_type,
                    count,
                    config.big_tie.min(count),
                    config.custom_properties,
                    &mut rng,
                    now,
                ),
            );
        }
        let links = associations::generate(&objects);
        let owners = reference::owners(config.owners, now);
        let pipelines = ["deals", "tickets"]
            .map(|t| (t.to_string(), reference::pipelines(t, now)))
            .into_iter()
            .collect();
        let state: Shared = Arc::new(Mutex::new(Fake {
            config,
            objects,
            links,
            merged: Vec::new(),
            owners,
            pipelines,
            faults: VecDeque::new(),
            stats: Stats::default(),
            calls: VecDeque::new(),
            searches: VecDeque::new(),
            rng,
        }));
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let app = router(state.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
        });
        Ok(FakeHubSpot {
            addr,
            state,
            _stop: stop,
        })
    }

    /// Its address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its base URL, for the source's configuration.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Fake> {
        self.state.locked()
    }

    /// Injects faults into the next matching requests.
    pub fn inject(&self, plan: FaultPlan) {
        self.lock().faults.push_back(plan);
    }

    /// Changes the data set.
    pub fn mutate(&self, mutation: &Mutation) -> Vec<u64> {
        admin::mutate(&mut self.lock(), mutation)
    }

    /// What it served so far.
    pub fn stats(&self) -> Stats {
        self.lock().stats.clone()
    }

    /// Every record of a type, live and archived, by id.
    pub fn dump(&self, object_type: &str) -> Vec<Dumped> {
        admin::dump(&self.lock(), object_type)
    }

    /// The names of every property `object_type` defines, as its definitions list them.
    pub fn property_names(&self, object_type: &str) -> Vec<String> {
        self.lock()
            .objects
            .get(object_type)
            .map(|set| set.known.clone())
            .unwrap_or_default()
    }

    /// Every link from records of `from` to records of `to`: from id to the linked ids, sorted,
    /// records without links left out.
    pub fn associations(
        &self,
        from: &str,
        to: &str,
    ) -> std::collections::BTreeMap<String, Vec<String>> {
        self.lock().links.all(canonical(from), canonical(to))
    }

    /// The records of `object_type` merged away, each with the record it was merged into.
    pub fn merged(&self, object_type: &str) -> Vec<(String, String)> {
        let object_type = canonical(object_type);
        self.lock()
            .merged
            .iter()
            .filter(|(t, _, _)| t == object_type)
            .map(|(_, secondary, primary)| (secondary.to_string(), primary.to_string()))
            .collect()
    }

    /// Its owners, active and archived, as the owners endpoint answers them.
    pub fn owners(&self) -> Vec<serde_json::Value> {
        self.lock()
            .owners
            .iter()
            .map(|o| serde_json::to_value(o).unwrap_or_default())
            .collect()
    }

    /// The pipelines of `object_type`, as the pipelines endpoint answers them.
    pub fn pipelines(&self, object_type: &str) -> Vec<serde_json::Value> {
        self.lock()
            .pipelines
            .get(object_type)
            .cloned()
            .unwrap_or_default()
    }

    /// Changes the round trip of every request from now on ([`FakeConfig::latency`]).
    pub fn set_latency(&self, latency: Duration) {
        self.lock().config.latency = latency;
    }

    /// Serves the legacy paths, or retires them (410) from now on ([`FakeConfig::legacy`]).
    pub fn set_legacy(&self, legacy: Legacy) {
        self.lock().config.legacy = legacy;
    }

    /// Changes the rate limits at run time.
    pub fn set_limits(&self, per_ten_seconds: Option<u32>, search_per_second: Option<u32>) {
        let mut fake = self.lock();
        fake.config.per_ten_seconds = per_ten_seconds;
        fake.config.search_per_second = search_per_second;
        fake.calls.clear();
        fake.searches.clear();
    }
}

fn router(state: Shared) -> Router {
    let crm = Served::all().fold(Router::new(), |router, served| {
        router.merge(routes(&served.routes()).layer(axum::Extension(served)))
    });
    // Where HubSpot served schemas on v3 beside `/crm-object-schemas/v3/schemas`, and owners
    // with a trailing slash (its own paging links have one).
    let legacy_extras = Router::new()
        .route("/crm/v3/schemas", get(properties::schemas_route))
        .route("/crm/v3/owners/", get(reference::owners_route))
        .layer(axum::Extension(Served::Legacy));
    crm.merge(legacy_extras)
        .route("/_admin/faults", post(admin::admin_faults))
        // A mutation may set a value of tens of MB: what a test of huge pages needs.
        .route(
            "/_admin/mutate",
            post(admin::admin_mutate).layer(axum::extract::DefaultBodyLimit::max(64 << 20)),
        )
        .route("/_admin/latency", post(admin::admin_latency))
        .route("/_admin/legacy", post(admin::admin_legacy))
        .route("/_admin/stats", get(admin::admin_stats))
        .route("/_admin/dump", get(admin::admin_dump))
        .with_state(state)
}

/// One family's CRM routes, each to the one handler both families share.
fn routes(r: &versions::Routes) -> Router<Shared> {
    Router::new()
        .route(&r.objects, get(list::list))
        .route(&r.record, get(record::record_route))
        .route(&r.search, post(search::search_route))
        .route(&r.batch_read, post(batch::batch_read_route))
        .route(&r.record_links, get(links::record_links_route))
        .route(&r.properties, get(properties::properties_route))
        .route(&r.schemas, get(properties::schemas_route))
        .route(&r.owners, get(reference::owners_route))
        .route(&r.pipelines, get(reference::pipelines_route))
        .route(&r.links_batch, post(associations::batch_read_route))
        .route(&r.labels, get(links::labels_route))
}

/// The key an object type's records are kept under: a standard type's `objectTypeId` (`0-3`)
/// is its name (`deals`), and a custom object's fully qualified name is its `objectTypeId`, as
/// HubSpot takes any of them in a URL.
pub(crate) fn canonical(object: &str) -> &str {
    if object == properties::CUSTOM_OBJECT_NAMES[1] {
        data::CUSTOM_OBJECT_TYPE_ID
    } else {
        versions::type_name(object).unwrap_or(object)
    }
}

/// Answers a CRM route: builds its answer under the fake's lock with `build`, then sends it
/// (with its fault, counted) or the refusal it met (counted).
async fn answer(
    state: &Shared,
    build: impl FnOnce(&mut Fake) -> Result<wire::Built, Refusal>,
) -> Response {
    // Half the round trip on the way in, half on the way out.
    let half = state.locked().config.latency / 2;
    if !half.is_zero() {
        tokio::time::sleep(half).await;
    }
    let built = {
        let mut fake = state.locked();
        build(&mut fake)
    };
    if !half.is_zero() {
        tokio::time::sleep(half).await;
    }
    match built {
        Ok((body, records, fault, limit_headers)) => {
            respond(state, body, records, fault, limit_headers).await
        }
        Err(response) => {
            count_status(state, &response);
            *response
        }
    }
}

/// Answers a batch route as [`answer`] does, with a 207 (Multi-Status) when `build` says some
/// of its inputs had nothing to read.
async fn answer_batch(
    state: &Shared,
    build: impl FnOnce(&mut Fake) -> Result<(wire::Built, bool), Refusal>,
) -> Response {
    let mut partial = false;
    let mut response = answer(state, |fake| {
        let (built, some_missing) = build(fake)?;
        partial = some_missing;
        Ok(built)
    })
    .await;
    if partial && response.status() == axum::http::StatusCode::OK {
        *response.status_mut() = axum::http::StatusCode::MULTI_STATUS;
    }
    response
}

/// Sends a page, applying an answer fault, and counts what was served.
async fn respond(
    state: &Shared,
    body: Vec<u8>,
    records: u64,
    fault: Option<Fault>,
    headers: HeaderMap,
) -> Response {
    if fault == Some(Fault::Endless) {
        let mut fake = state.locked();
        *fake.stats.by_status.entry(200).or_default() += 1;
        drop(fake);
        use futures::StreamExt;
        let opening = futures::stream::once(async {
            Ok::<_, std::convert::Infallible>(bytes::Bytes::from_static(b"{\"results\":[\""))
        });
        let padding =
            futures::stream::repeat_with(|| Ok(bytes::Bytes::from(vec![b'x'; 64 * 1024])));
        let mut response = Response::new(Body::from_stream(opening.chain(padding)));
        response.headers_mut().insert(
            "content-type",
            HeaderValue::from_static("application/json;charset=utf-8"),
        );
        response.headers_mut().extend(headers);
        return response;
    }
    let body = match fault {
        Some(Fault::Slow { ms }) => {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            body
        }
        Some(Fault::Garbage) => b"<html><body>502 Bad Gateway</body></html>".to_vec(),
        Some(Fault::Truncated) => body[..body.len() / 2].to_vec(),
        Some(Fault::Nested { depth }) => nested(body, depth),
        _ => body,
    };
    let mut fake = state.locked();
    fake.stats.records_served += records;
    *fake.stats.by_status.entry(200).or_default() += 1;
    let mut response = Response::new(Body::from(body));
    response.headers_mut().insert(
        "content-type",
        HeaderValue::from_static("application/json;charset=utf-8"),
    );
    response.headers_mut().extend(headers);
    response
}

/// `body` with a value `depth` arrays deep first among its first result's properties.
fn nested(body: Vec<u8>, depth: usize) -> Vec<u8> {
    let anchor = b"\"properties\":{";
    let Some(at) = body.windows(anchor.len()).position(|w| w == anchor) else {
        return body;
    };
    let at = at + anchor.len();
    let mut out = Vec::with_capacity(body.len() + 2 * depth + 16);
    out.extend_from_slice(&body[..at]);
    out.extend_from_slice(b"\"nested\":");
    out.extend(std::iter::repeat_n(b'[', depth));
    out.extend(std::iter::repeat_n(b']', depth));
    out.push(b',');
    out.extend_from_slice(&body[at..]);
    out
}

fn count_status(state: &Shared, response: &Response) {
    let mut fake = state.locked();
    *fake
        .stats
        .by_status
        .entry(response.status().as_u16())
        .or_default() += 1;
}
