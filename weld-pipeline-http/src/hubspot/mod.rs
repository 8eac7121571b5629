//! The HubSpot source: the code that talks to `api.hubapi.com` (or to the fake).
//!
//! # How a stream is synced
//!
//! The first run is a **full sync** through the list endpoint (100 a page, following
//! `paging.next.after`), live records then archived ones (`archived=true`). Its end is a
//! checkpoint at the time the run started, minus the settle delay.
//!
//! Every later run is **incremental**, built to avoid what other connectors got wrong (runs that
//! loop on a page of equal timestamps, or skip records tied at a page boundary). Search takes one sort rule and promises no order among ties, so a cursor of
//! "the last modification time seen" cannot be made safe. Instead a run syncs a **window** of
//! modification times `[from, until]`, `until` being now minus the settle delay (the search
//! index trails writes), filtered on the change-tracking property and **sorted by
//! `hs_object_id`**. Each page re-anchors the query after the last id committed
//! (`hs_object_id GT last`) instead of paging on by offset, so no query ever reaches the 10,000
//! result cap, and any number of records on one timestamp arrives exactly once. Archiving does
//! not bump the modification date and archived records never appear in search, so the run
//! then lists `archived=true` and delivers those archived inside the window. The checkpoint is
//! the window and the last id while the window is in progress, and the window's `until` once it
//! is done; the next run's window starts there.
//!
//! One page is one batch, its cursor the position after it. The page is parsed once here; each
//! record's JSON is kept as the bytes HubSpot sent (unless a long property list had to be split
//! across requests, in which case the parts are merged by id and written once).
//!
//! # Rate limits and errors
//!
//! Every call goes through the core's layers, outermost first: retry (transient errors only,
//! full-jitter backoff, `Retry-After` honoured up to 5 minutes), rate limit (list calls paced
//! from the `X-HubSpot-RateLimit-*` headers by a [`BudgetPacer`];
//! search calls by a token bucket under HubSpot's 5 per second), timeout. A `DAILY` 429 asks to
//! wait until midnight: longer than the retry layer waits, so the run fails with that error and
//! the next scheduled run tries again. 429 (other policies), 5xx, timeouts and resets are
//! retried; 400, 401, 403, 404, 414 and a page that does not parse fail the run at once.

mod client;
mod config;
mod error;
mod sources;

pub use config::{HubSpotConfig, Token};
pub use error::HubSpotError;
pub use sources::{HubSpotKind, HubSpotParams, HubSpotSources, KIND};

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{json, Value};
use tower::util::BoxCloneSyncService;
use tower::{Service, ServiceBuilder, ServiceExt};
use weld_pipeline::middleware::{
    BudgetPacer, RateLimitLayer, RetryLayer, RetryPolicy, TelemetryLayer, TimeoutLayer, TokenBucket,
};
use weld_pipeline::source::{Page, PageRequest, Pages};
use weld_pipeline::{BoxError, Checkpoint, Error, Json, Record, Timestamp};

use client::{Call, Client};

type CallService = BoxCloneSyncService<Call, Bytes, BoxError>;

/// Where a sync stands: the source's checkpoint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "phase", rename_all = "snake_case")]
pub enum Position {
    /// Full sync, live records, from `after`.
    FullLive {
        /// The list's paging token.
        after: Option<String>,
        /// When the full sync started (ms).
        started_at: i64,
    },
    /// Full sync, archived records, from `after`.
    FullArchived {
        /// The list's paging token.
        after: Option<String>,
        /// When the full sync started (ms).
        started_at: i64,
    },
    /// Incremental: records modified in `[from, until]`, after id `last_id`.
    Window {
        /// Start of the window (ms).
        from: i64,
        /// End of the window (ms).
        until: i64,
        /// The last id committed in this window.
        last_id: u64,
    },
    /// Incremental: records archived in `[from, until)`, listing from `after`.
    WindowArchived {
        /// Start of the window (ms).
        from: i64,
        /// End of the window (ms).
        until: i64,
        /// The list's paging token.
        after: Option<String>,
    },
    /// Everything changed up to `until` (ms) is synced; the next run's window starts there.
    Done {
        /// The end of the last window.
        until: i64,
    },
}

/// Fetches one page of a HubSpot sync: a `Service<PageRequest>` for [`Pages`].
#[derive(Clone)]
pub struct HubSpotPages {
    config: Arc<HubSpotConfig>,
    list: CallService,
    search: CallService,
}

impl std::fmt::Debug for HubSpotPages {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubSpotPages")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// The rate limits of one HubSpot account, shared by all the sources reading from it.
#[derive(Clone, Debug)]
pub struct AccountLimits {
    budget: Arc<BudgetPacer>,
    searches: Arc<TokenBucket>,
}

impl AccountLimits {
    /// Limits at `config`'s rates (`per_ten_seconds`, `searches_per_second`).
    pub fn new(config: &HubSpotConfig) -> Self {
        AccountLimits {
            budget: Arc::new(BudgetPacer::new(
                config.per_ten_seconds,
                Duration::from_secs(10),
            )),
            searches: Arc::new(TokenBucket::new(
                config.searches_per_second.max(1),
                Duration::from_secs(1),
            )),
        }
    }
}

/// The HubSpot source for one object type.
pub type HubSpotSource = Pages<HubSpotPages>;

/// Builds a HubSpot source.
///
/// # Errors
///
/// When the HTTP client cannot be built.
pub fn source(config: HubSpotConfig) -> Result<HubSpotSource, Error> {
    Ok(Pages::new(HubSpotPages::new(config)?))
}

impl HubSpotPages {
    /// The page fetcher, with its layers.
    ///
    /// # Errors
    ///
    /// When the HTTP client cannot be built.
    pub fn new(config: HubSpotConfig) -> Result<Self, Error> {
        let limits = AccountLimits::new(&config);
        Self::with_limits(config, &limits)
    }

    /// The page fetcher, sharing `limits` with every other source of the same account: HubSpot
    /// counts calls per account, not per object type.
    ///
    /// # Errors
    ///
    /// When the HTTP client cannot be built.
    pub fn with_limits(config: HubSpotConfig, limits: &AccountLimits) -> Result<Self, Error> {
        let config = Arc::new(config);
        let budget = limits.budget.clone();
        let client = Client::new(config.clone(), budget.clone())?;
        let retry = RetryLayer::new(RetryPolicy::default());
        // Telemetry outermost: `weld_calls_total{service}` counts the pages callers asked for, a
        // page retried three times and then fetched counting once.
        let list = ServiceBuilder::new()
            .layer(TelemetryLayer::new("hubspot_list"))
            .layer(retry.clone())
            .layer(RateLimitLayer::shared(budget))
            .layer(TimeoutLayer::new(config.timeout + Duration::from_secs(1)))
            .service(client.clone());
        let search = ServiceBuilder::new()
            .layer(TelemetryLayer::new("hubspot_search"))
            .layer(retry)
            .layer(RateLimitLayer::shared(limits.searches.clone()))
            .layer(TimeoutLayer::new(config.timeout + Duration::from_secs(1)))
            .service(client);
        Ok(HubSpotPages {
            config,
            list: BoxCloneSyncService::new(list),
            search: BoxCloneSyncService::new(search),
        })
    }
}

#[derive(Deserialize)]
struct Listing<'a> {
    #[serde(borrow)]
    results: Vec<&'a RawValue>,
    paging: Option<Paging>,
}

#[derive(Deserialize)]
struct Paging {
    next: Option<Next>,
}

#[derive(Deserialize)]
struct Next {
    after: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Head {
    id: String,
    updated_at: String,
    #[serde(default)]
    archived: bool,
    archived_at: Option<String>,
}

fn unparseable(what: impl std::fmt::Display) -> BoxError {
    Box::new(Error::from(HubSpotError::Unparseable(what.to_string())))
}

/// A record from one result of a page.
fn record(raw: &RawValue) -> Result<(Record, Option<i64>), BoxError> {
    let head: Head =
        serde_json::from_str(raw.get()).map_err(|e| unparseable(format!("a result: {e}")))?;
    let updated_at = Timestamp::parse_rfc3339(&head.updated_at).map_err(unparseable)?;
    let archived_at = head
        .archived_at
        .as_deref()
        .map(Timestamp::parse_rfc3339)
        .transpose()
        .map_err(unparseable)?
        .map(Timestamp::as_millis);
    Ok((
        Record {
            id: head.id,
            updated_at,
            archived: head.archived,
            data: Json::from_raw(raw),
        },
        archived_at,
    ))
}

/// A page of a listing: its records (with their archive times) and the next paging token.
struct Listed {
    records: Vec<(Record, Option<i64>)>,
    next: Option<String>,
}

fn parse(body: &Bytes) -> Result<Listed, BoxError> {
    let listing: Listing<'_> = serde_json::from_slice(body).map_err(unparseable)?;
    let records = listing
        .results
        .iter()
        .map(|raw| record(raw))
        .collect::<Result<_, _>>()?;
    Ok(Listed {
        records,
        next: listing.paging.and_then(|p| p.next).map(|n| n.after),
    })
}

fn position(cursor: &Checkpoint) -> Result<Option<Position>, BoxError> {
    cursor.position().map_err(|e| Box::new(e) as BoxError)
}

fn checkpoint(position: &Position) -> Result<Checkpoint, BoxError> {
    Checkpoint::from_position(position).map_err(|e| Box::new(e) as BoxError)
}

impl HubSpotPages {
    fn settle(&self, now: i64) -> i64 {
        now - self.config.settle_delay.as_millis() as i64
    }

    /// One list page, its property list split across requests when the URL would be too long.
    async fn list_page(&self, archived: bool, after: Option<String>) -> Result<Listed, BoxError> {
        let properties = self.config.properties();
        let whole = Client::list_url(&self.config, archived, after.as_deref(), &properties);
        if whole.len() <= self.config.max_url_bytes {
            let body = self
                .list
                .clone()
                .oneshot(Call::List {
                    archived,
                    after,
                    properties,
                })
                .await?;
            return parse(&body);
        }
        // Split: each part asks for the same page with some of the properties; the parts are
        // merged by id. The first part decides which records are on the page.
        let base = Client::list_url(&self.config, archived, after.as_deref(), &[]).len() + 12;
        let room = self.config.max_url_bytes.saturating_sub(base).max(64);
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
        let mut merged: Vec<(String, Value)> = Vec::new();
        let mut next = None;
        for (i, part) in parts.into_iter().enumerate() {
            let body = self
                .list
                .clone()
                .oneshot(Call::List {
                    archived,
                    after: after.clone(),
                    properties: part,
                })
                .await?;
            let page: Value = serde_json::from_slice(&body).map_err(unparseable)?;
            let results = page
                .get("results")
                .and_then(Value::as_array)
                .ok_or_else(|| unparseable("no results"))?;
            if i == 0 {
                next = page
                    .pointer("/paging/next/after")
                    .and_then(Value::as_str)
                    .map(str::to_string);
                for result in results {
                    let id = result
                        .get("id")
                        .and_then(Value::as_str)
                        .ok_or_else(|| unparseable("a result without id"))?;
                    merged.push((id.to_string(), result.clone()));
                }
                continue;
            }
            let by_id: BTreeMap<&str, &Value> = results
                .iter()
                .filter_map(|r| Some((r.get("id")?.as_str()?, r)))
                .collect();
            for (id, record) in &mut merged {
                if let (Some(Value::Object(extra)), Some(Value::Object(properties))) = (
                    by_id.get(id.as_str()).and_then(|r| r.get("properties")),
                    record.get_mut("properties"),
                ) {
                    properties.extend(extra.clone());
                }
            }
        }
        let mut records = Vec::with_capacity(merged.len());
        for (_, value) in merged {
            let raw = serde_json::value::to_raw_value(&value).map_err(unparseable)?;
            records.push(record(&raw)?);
        }
        Ok(Listed { records, next })
    }

    async fn page(self, request: PageRequest) -> Result<Page, BoxError> {
        let now = Timestamp::now().as_millis();
        let at = position(&request.cursor)?.unwrap_or(Position::FullLive {
            after: None,
            started_at: now,
        });
        let (records, next) = match at {
            Position::FullLive { after, started_at } => {
                let listed = self.list_page(false, after).await?;
                let next = match listed.next {
                    Some(after) => Position::FullLive {
                        after: Some(after),
                        started_at,
                    },
                    None => Position::FullArchived {
                        after: None,
                        started_at,
                    },
                };
                (listed.records, next)
            }
            Position::FullArchived { after, started_at } => {
                let listed = self.list_page(true, after).await?;
                let next = match listed.next {
                    Some(after) => Position::FullArchived {
                        after: Some(after),
                        started_at,
                    },
                    None => Position::Done {
                        until: self.settle(started_at),
                    },
                };
                (listed.records, next)
            }
            Position::Done { until } => {
                // A new run: its window runs from the last one's end to now minus the settle
                // delay. Its first page is the window's first search.
                let window_end = self.settle(now).max(until);
                return Box::pin(self.search_page(until, window_end, 0)).await;
            }
            Position::Window {
                from,
                until,
                last_id,
            } => return self.search_page(from, until, last_id).await,
            Position::WindowArchived { from, until, after } => {
                let listed = self.list_page(true, after).await?;
                let records = listed
                    .records
                    .into_iter()
                    .filter(|(_, archived_at)| {
                        archived_at.is_none_or(|at| (from..until).contains(&at))
                    })
                    .collect();
                let next = match listed.next {
                    Some(after) => Position::WindowArchived {
                        from,
                        until,
                        after: Some(after),
                    },
                    None => Position::Done { until },
                };
                (records, next)
            }
        };
        Ok(Page {
            records: records.into_iter().map(|(record, _)| record).collect(),
            last: matches!(next, Position::Done { .. }),
            cursor: checkpoint(&next)?,
        })
    }

    /// One page of a window: the records modified in it after `last_id`, by id.
    async fn search_page(&self, from: i64, until: i64, last_id: u64) -> Result<Page, BoxError> {
        let modified = self.config.modified_property();
        let body = json!({
            "filterGroups": [{"filters": [
                {"propertyName": modified, "operator": "GTE", "value": from.to_string()},
                {"propertyName": modified, "operator": "LTE", "value": until.to_string()},
                {"propertyName": "hs_object_id", "operator": "GT", "value": last_id.to_string()},
            ]}],
            "sorts": [{"propertyName": "hs_object_id", "direction": "ASCENDING"}],
            "properties": self.config.properties(),
            "limit": self.config.search_limit,
        });
        let answer = self.search.clone().oneshot(Call::Search { body }).await?;
        let listed = parse(&answer)?;
        let last = listed
            .records
            .iter()
            .filter_map(|(r, _)| r.id.parse::<u64>().ok())
            .max();
        // Re-anchored on the last id, never paged by offset: the window ends when a page comes
        // back with nothing after it.
        let next = match (last, listed.next) {
            (Some(last), Some(_)) => Position::Window {
                from,
                until,
                last_id: last,
            },
            _ => Position::WindowArchived {
                from,
                until,
                after: None,
            },
        };
        Ok(Page {
            records: listed
                .records
                .into_iter()
                .map(|(record, _)| record)
                .collect(),
            last: false,
            cursor: checkpoint(&next)?,
        })
    }
}

impl Service<PageRequest> for HubSpotPages {
    type Response = Page;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Page, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: PageRequest) -> Self::Future {
        Box::pin(self.clone().page(request))
    }
}
