//! A HubSpot CRM v3 stand-in: an axum server answering list and search exactly as HubSpot's
//! CRM v3 API does (checked against HubSpot's official Python client in CI), from a seeded, generated data set, with HubSpot's rate limits and faults on demand.
//!
//! What it does, each as the real API does it:
//! - `GET /crm/v3/objects/{type}`: `limit` (default 10, max 100), `after` (the next id),
//!   `properties` (unknown names left out, known empty ones `null`), `archived=true` (only
//!   archived records); `paging.next` only when more follow.
//! - `POST /crm/v3/objects/{type}/search`: `filterGroups` (AND within a group, OR between),
//!   one sort rule (more is a 400), ties in an order the client cannot rely on (shuffled per
//!   request), `limit` up to 200, `after` an offset; paging past 10,000 results is a 400;
//!   archived records never appear.
//! - Bearer token checked (401 `INVALID_AUTHENTICATION`); object types can be made forbidden
//!   (403 `MISSING_SCOPES`); a URL over the length limit is a 414.
//! - Rate limits: a rolling 10-second window on non-search calls with the
//!   `X-HubSpot-RateLimit-*` headers and `TEN_SECONDLY_ROLLING` 429s, and a 5-per-second search
//!   limit (`SECONDLY`, no headers); `Retry-After` sent or not, by configuration.
//! - Faults, by configuration or at run time (`POST /_admin/faults`): a status (5xx, 429 with or
//!   without `Retry-After`, a `DAILY` 429), a response slower than the client's timeout, truncated
//!   or invalid JSON; each for the next N requests.
//! - Changes between runs (`POST /_admin/mutate`): records modified, created or archived
//!   (archiving does not bump the modification time, as in HubSpot).
//! - What it served (`GET /_admin/stats`) and its whole data set (`GET /_admin/dump`), so a test
//!   compares the stored set to the fake's exactly.

mod data;
mod search;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;
use weld_pipeline::Timestamp;

use data::{generate, Answer, ObjectSet};

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
}

impl Default for FakeConfig {
    fn default() -> Self {
        FakeConfig {
            token: "fake-token".into(),
            seed: 7,
            contacts: 1_000,
            companies: 100,
            deals: 100,
            big_tie: 0,
            per_ten_seconds: None,
            search_per_second: Some(5),
            retry_after: true,
            forbidden: vec![],
            max_url_bytes: 8_192,
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
}

/// A fault and how many requests it hits, and which (`list`, `search` or any).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultPlan {
    /// The fault.
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
    /// Responses by status.
    pub by_status: BTreeMap<u16, u64>,
    /// 429 responses (the rate limits and injected ones).
    pub rate_limited: u64,
    /// Records served in list and search results.
    pub records_served: u64,
}

/// Changes to make between runs.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Mutation {
    /// The object type.
    pub object: String,
    /// Records to modify, distinct, chosen at random (their modification time becomes now).
    #[serde(default)]
    pub modify: usize,
    /// Records to create.
    #[serde(default)]
    pub create: usize,
    /// Records to archive (their modification time does not change).
    #[serde(default)]
    pub archive: usize,
    /// Whether all modified and created records share one modification time.
    #[serde(default)]
    pub tie: bool,
}

/// A record as the dump shows it: everything the fake holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Dumped {
    /// The id.
    pub id: String,
    /// The modification time, ISO-8601.
    pub updated_at: String,
    /// Whether it is archived.
    pub archived: bool,
    /// Every property.
    pub properties: BTreeMap<String, Option<String>>,
}

struct Fake {
    config: FakeConfig,
    objects: HashMap<String, ObjectSet>,
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
        for (object_type, count) in [
            ("contacts", config.contacts),
            ("companies", config.companies),
            ("deals", config.deals),
        ] {
            objects.insert(
                object_type.to_string(),
                generate(object_type, count, config.big_tie.min(count), &mut rng, now),
            );
        }
        let state: Shared = Arc::new(Mutex::new(Fake {
            config,
            objects,
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
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Injects faults into the next matching requests.
    pub fn inject(&self, plan: FaultPlan) {
        self.lock().faults.push_back(plan);
    }

    /// Changes the data set.
    pub fn mutate(&self, mutation: &Mutation) -> Vec<u64> {
        mutate(&mut self.lock(), mutation)
    }

    /// What it served so far.
    pub fn stats(&self) -> Stats {
        self.lock().stats.clone()
    }

    /// Every record of a type, live and archived, by id.
    pub fn dump(&self, object_type: &str) -> Vec<Dumped> {
        dump(&self.lock(), object_type)
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
    Router::new()
        .route("/crm/v3/objects/{object}", get(list))
        .route("/crm/v3/objects/{object}/search", post(search_route))
        .route("/_admin/faults", post(admin_faults))
        .route("/_admin/mutate", post(admin_mutate))
        .route("/_admin/stats", get(admin_stats))
        .route("/_admin/dump", get(admin_dump))
        .with_state(state)
}

fn correlation_id(fake: &mut Fake) -> String {
    format!("{:08x}-fake-{:04x}", fake.rng.u32(..), fake.rng.u16(..))
}

/// HubSpot's error body, with every field it documents.
fn error(fake: &mut Fake, status: StatusCode, category: &str, message: &str) -> Refusal {
    let body = json!({
        "status": "error",
        "message": message,
        "correlationId": correlation_id(fake),
        "category": category,
        "errors": [],
        "context": {},
    });
    Box::new((status, Json(body)).into_response())
}

fn rate_limited(fake: &mut Fake, policy: &str, retry_after: Option<u64>) -> Refusal {
    fake.stats.rate_limited += 1;
    let message = match policy {
        "DAILY" => "You have reached your daily limit.",
        "SECONDLY" => "You have reached your secondly limit.",
        _ => "You have reached your ten_secondly_rolling limit.",
    };
    let body = json!({
        "status": "error",
        "message": message,
        "errorType": "RATE_LIMIT",
        "correlationId": correlation_id(fake),
        "policyName": policy,
    });
    let mut response = (StatusCode::TOO_MANY_REQUESTS, Json(body)).into_response();
    if let Some(seconds) = retry_after {
        response
            .headers_mut()
            .insert("retry-after", HeaderValue::from(seconds));
    }
    Box::new(response)
}

/// Checks what every CRM request goes through, in HubSpot's order: the token, the scope, the
/// URL length, the rate limits, then injected faults. `Ok` carries a fault to apply to the
/// answer (slow, garbage, truncated) and the rate-limit headers to send.
fn admit(
    fake: &mut Fake,
    headers: &HeaderMap,
    uri: &str,
    object: &str,
    searching: bool,
) -> Result<(Option<Fault>, HeaderMap), Refusal> {
    fake.stats.requests += 1;
    if searching {
        fake.stats.searches += 1;
    }
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if bearer != Some(fake.config.token.as_str()) {
        return Err(error(
            fake,
            StatusCode::UNAUTHORIZED,
            "INVALID_AUTHENTICATION",
            "Authentication credentials not found.",
        ));
    }
    if fake.config.forbidden.iter().any(|f| f == object) {
        let message = format!("This app hasn't been granted all required scopes to make this call. Read more about required scopes here: https://developers.hubspot.com/scopes. It requires one of the following scopes: [crm.objects.{object}.read]");
        return Err(error(
            fake,
            StatusCode::FORBIDDEN,
            "MISSING_SCOPES",
            &message,
        ));
    }
    if uri.len() > fake.config.max_url_bytes {
        return Err(Box::new(
            (StatusCode::URI_TOO_LONG, "URI Too Long").into_response(),
        ));
    }
    let now = Instant::now();
    let retry_after = fake.config.retry_after;
    let mut limit_headers = HeaderMap::new();
    if searching {
        if let Some(per_second) = fake.config.search_per_second {
            while fake
                .searches
                .front()
                .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(1))
            {
                fake.searches.pop_front();
            }
            if fake.searches.len() >= per_second as usize {
                return Err(rate_limited(fake, "SECONDLY", retry_after.then_some(1)));
            }
            fake.searches.push_back(now);
        }
    } else if let Some(max) = fake.config.per_ten_seconds {
        let window = Duration::from_secs(10);
        while fake
            .calls
            .front()
            .is_some_and(|t| now.duration_since(*t) >= window)
        {
            fake.calls.pop_front();
        }
        if fake.calls.len() >= max as usize {
            let wait = fake
                .calls
                .front()
                .map_or(1, |t| (window - now.duration_since(*t)).as_secs() + 1);
            return Err(rate_limited(
                fake,
                "TEN_SECONDLY_ROLLING",
                retry_after.then_some(wait),
            ));
        }
        fake.calls.push_back(now);
        let remaining = max as usize - fake.calls.len();
        for (name, value) in [
            ("x-hubspot-ratelimit-max", max as u64),
            ("x-hubspot-ratelimit-remaining", remaining as u64),
            ("x-hubspot-ratelimit-interval-milliseconds", 10_000),
            ("x-hubspot-ratelimit-daily", 500_000),
            (
                "x-hubspot-ratelimit-daily-remaining",
                500_000u64.saturating_sub(fake.stats.requests),
            ),
        ] {
            limit_headers.insert(name, HeaderValue::from(value));
        }
    }
    let kind = if searching { "search" } else { "list" };
    let position = fake
        .faults
        .iter()
        .position(|plan| plan.only.as_deref().is_none_or(|only| only == kind));
    let Some(position) = position else {
        return Ok((None, limit_headers));
    };
    let plan = &mut fake.faults[position];
    let fault = plan.fault.clone();
    plan.count = plan.count.saturating_sub(1);
    if plan.count == 0 {
        fake.faults.remove(position);
    }
    match fault {
        Fault::Status { status } => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            Err(error(fake, status, "INJECTED", "An injected failure."))
        }
        Fault::RateLimited { retry_after } => {
            Err(rate_limited(fake, "TEN_SECONDLY_ROLLING", retry_after))
        }
        Fault::Daily => Err(rate_limited(fake, "DAILY", None)),
        other => Ok((Some(other), limit_headers)),
    }
}

/// Sends a page, applying an answer fault, and counts what was served.
async fn respond(
    state: &Shared,
    body: Vec<u8>,
    records: u64,
    fault: Option<Fault>,
    headers: HeaderMap,
) -> Response {
    let body = match fault {
        Some(Fault::Slow { ms }) => {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            body
        }
        Some(Fault::Garbage) => b"<html><body>502 Bad Gateway</body></html>".to_vec(),
        Some(Fault::Truncated) => body[..body.len() / 2].to_vec(),
        _ => body,
    };
    let mut fake = state.lock().unwrap_or_else(|e| e.into_inner());
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

fn count_status(state: &Shared, response: &Response) {
    let mut fake = state.lock().unwrap_or_else(|e| e.into_inner());
    *fake
        .stats
        .by_status
        .entry(response.status().as_u16())
        .or_default() += 1;
}

#[derive(Default)]
struct ListQuery {
    limit: Option<String>,
    after: Option<String>,
    properties: Option<String>,
    archived: Option<String>,
}

impl ListQuery {
    /// HubSpot takes `properties` comma-separated, repeated (as its SDKs send it), or both.
    fn from_pairs(pairs: Vec<(String, String)>) -> Self {
        let mut query = ListQuery::default();
        let mut properties: Vec<String> = Vec::new();
        for (key, value) in pairs {
            match key.as_str() {
                "limit" => query.limit = Some(value),
                "after" => query.after = Some(value),
                "archived" => query.archived = Some(value),
                "properties" => properties.extend(
                    value
                        .split(',')
                        .filter(|p| !p.is_empty())
                        .map(str::to_string),
                ),
                _ => {}
            }
        }
        if !properties.is_empty() {
            query.properties = Some(properties.join(","));
        }
        query
    }
}

fn properties_or_defaults(set: &ObjectSet, asked: Option<&str>) -> Vec<String> {
    match asked {
        Some(list) if !list.is_empty() => list.split(',').map(str::to_string).collect(),
        _ => set.defaults.iter().map(|s| s.to_string()).collect(),
    }
}

async fn list(
    State(state): State<Shared>,
    Path(object): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Response {
    let query = ListQuery::from_pairs(pairs);
    let built = {
        let mut fake = state.lock().unwrap_or_else(|e| e.into_inner());
        build_list(&mut fake, &object, &uri.to_string(), &headers, &query)
    };
    match built {
        Ok((body, records, fault, limit_headers)) => {
            respond(&state, body, records, fault, limit_headers).await
        }
        Err(response) => {
            count_status(&state, &response);
            *response
        }
    }
}

type Built = (Vec<u8>, u64, Option<Fault>, HeaderMap);

/// A page of list or search results, as HubSpot writes it.
#[derive(Serialize)]
pub(crate) struct Listing<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) total: Option<usize>,
    pub(crate) results: Vec<Answer<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) paging: Option<Paging>,
}

#[derive(Serialize)]
pub(crate) struct Paging {
    pub(crate) next: Next,
}

#[derive(Serialize)]
pub(crate) struct Next {
    pub(crate) after: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) link: Option<String>,
}

/// An error answer, boxed: it is built rarely and a `Response` is large.
type Refusal = Box<Response>;

fn build_list(
    fake: &mut Fake,
    object: &str,
    uri: &str,
    headers: &HeaderMap,
    query: &ListQuery,
) -> Result<Built, Refusal> {
    let (fault, limit_headers) = admit(fake, headers, uri, object, false)?;
    let limit = match query.limit.as_deref().map(str::parse::<usize>) {
        None => 10,
        Some(Ok(limit)) if (1..=100).contains(&limit) => limit,
        Some(_) => {
            return Err(error(
                fake,
                StatusCode::BAD_REQUEST,
                "VALIDATION_ERROR",
                "limit must be between 1 and 100",
            ))
        }
    };
    let after: u64 = match query.after.as_deref().map(str::parse) {
        None => 0,
        Some(Ok(after)) => after,
        Some(Err(_)) => {
            return Err(error(
                fake,
                StatusCode::BAD_REQUEST,
                "VALIDATION_ERROR",
                "after is not a valid paging token",
            ))
        }
    };
    // Booleans are read as HubSpot reads them, case-insensitively (its Python SDK sends `True`).
    let archived = query
        .archived
        .as_deref()
        .is_some_and(|a| a.eq_ignore_ascii_case("true"));
    let Some(set) = fake.objects.get(object) else {
        return Err(error(
            fake,
            StatusCode::NOT_FOUND,
            "OBJECT_NOT_FOUND",
            &format!("Unable to infer object type from: {object}"),
        ));
    };
    let properties = properties_or_defaults(set, query.properties.as_deref());
    let mut page: Vec<Answer<'_>> = Vec::with_capacity(limit);
    let mut next = None;
    for object in set
        .records
        .range(after..)
        .map(|(_, o)| o)
        .filter(|o| o.archived_at.is_some() == archived)
    {
        if page.len() == limit {
            next = Some(object.id);
            break;
        }
        page.push(object.answer(&properties, &set.known));
    }
    let records = page.len() as u64;
    let body = Listing {
        total: None,
        results: page,
        paging: next.map(|next| Paging {
            next: Next {
                link: Some(format!(
                    "https://api.hubapi.com/crm/v3/objects/{object}?after={next}"
                )),
                after: next.to_string(),
            },
        }),
    };
    // Written straight from the records: no intermediate JSON tree.
    Ok((
        serde_json::to_vec(&body).unwrap_or_default(),
        records,
        fault,
        limit_headers,
    ))
}

async fn search_route(
    State(state): State<Shared>,
    Path(object): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let built = {
        let mut fake = state.lock().unwrap_or_else(|e| e.into_inner());
        search::build(&mut fake, &object, &uri.to_string(), &headers, &body)
    };
    match built {
        Ok((body, records, fault, limit_headers)) => {
            respond(&state, body, records, fault, limit_headers).await
        }
        Err(response) => {
            count_status(&state, &response);
            *response
        }
    }
}

fn mutate(fake: &mut Fake, mutation: &Mutation) -> Vec<u64> {
    let now = Timestamp::now().as_millis();
    let Fake { objects, rng, .. } = fake;
    let Some(set) = objects.get_mut(&mutation.object) else {
        return vec![];
    };
    // Distinct records, chosen at random.
    let live = set.live_shuffled(rng);
    let mut touched = Vec::new();
    let stamp = |i: usize| if mutation.tie { now } else { now - i as i64 };
    for (i, &id) in live.iter().take(mutation.modify).enumerate() {
        set.touch(id, stamp(i));
        if let Some(object) = set.records.get_mut(&id) {
            object
                .properties
                .insert("firstname".into(), Some(format!("Changed{i}")));
        }
        touched.push(id);
    }
    for i in 0..mutation.create {
        let at = stamp(i);
        touched.push(set.create(rng, at, at));
    }
    let live = set.live_shuffled(rng);
    for &id in live.iter().take(mutation.archive) {
        if let Some(object) = set.records.get_mut(&id) {
            if object.archived_at.is_none() {
                object.archived_at = Some(now);
                touched.push(id);
            }
        }
    }
    touched
}

fn dump(fake: &Fake, object: &str) -> Vec<Dumped> {
    fake.objects
        .get(object)
        .map(|set| {
            set.records
                .values()
                .map(|o| Dumped {
                    id: o.id.to_string(),
                    updated_at: data::iso(o.updated_at),
                    archived: o.archived_at.is_some(),
                    properties: o.properties.clone(),
                })
                .collect()
        })
        .unwrap_or_default()
}

async fn admin_faults(
    State(state): State<Shared>,
    Json(plans): Json<Vec<FaultPlan>>,
) -> StatusCode {
    state
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .faults
        .extend(plans);
    StatusCode::NO_CONTENT
}

async fn admin_mutate(
    State(state): State<Shared>,
    Json(mutation): Json<Mutation>,
) -> Json<Vec<u64>> {
    Json(mutate(
        &mut state.lock().unwrap_or_else(|e| e.into_inner()),
        &mutation,
    ))
}

async fn admin_stats(State(state): State<Shared>) -> Json<Stats> {
    Json(
        state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .stats
            .clone(),
    )
}

#[derive(Deserialize)]
struct DumpQuery {
    object: String,
}

async fn admin_dump(
    State(state): State<Shared>,
    Query(query): Query<DumpQuery>,
) -> Json<Vec<Dumped>> {
    Json(dump(
        &state.lock().unwrap_or_else(|e| e.into_inner()),
        &query.object,
    ))
}
