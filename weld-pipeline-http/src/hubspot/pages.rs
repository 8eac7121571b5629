//! The page fetcher: one page of a sync per call, behind its layers, moving the position on.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use serde_json::json;
use tower::util::BoxCloneSyncService;
use tower::{Service, ServiceBuilder, ServiceExt};
use weld_pipeline::middleware::{
    RateLimitLayer, RetryLayer, RetryPolicy, TelemetryLayer, TimeoutLayer,
};
use weld_pipeline::source::{Page, PageRequest};
use weld_pipeline::{BoxError, Error, Timestamp};

use super::client::{Call, Client};
use super::parse::{parse, Listed};
use super::position::{checkpoint, position, Position};
use super::split::{self, Merged};
use super::{AccountLimits, HubSpotAccount, HubSpotObject};

type CallService = BoxCloneSyncService<Call, Bytes, BoxError>;

/// Fetches one page of a HubSpot sync: a `Service<PageRequest>` for [`Pages`](weld_pipeline::source::Pages).
#[derive(Clone)]
pub struct HubSpotPages {
    account: Arc<HubSpotAccount>,
    object: Arc<HubSpotObject>,
    list: CallService,
    search: CallService,
}

impl std::fmt::Debug for HubSpotPages {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubSpotPages")
            .field("account", &self.account)
            .field("object", &self.object)
            .finish_non_exhaustive()
    }
}

impl HubSpotPages {
    /// The page fetcher, with its layers.
    ///
    /// # Errors
    ///
    /// When the HTTP client cannot be built.
    pub fn new(account: HubSpotAccount, object: HubSpotObject) -> Result<Self, Error> {
        let limits = AccountLimits::new(&account);
        Self::with_limits(Arc::new(account), object, &limits)
    }

    /// The page fetcher, sharing `limits` with every other source of the same account: HubSpot
    /// counts calls per account, not per object type.
    ///
    /// # Errors
    ///
    /// When the HTTP client cannot be built.
    pub fn with_limits(
        account: Arc<HubSpotAccount>,
        object: HubSpotObject,
        limits: &AccountLimits,
    ) -> Result<Self, Error> {
        let object = Arc::new(object);
        let budget = limits.budget.clone();
        let client = Client::new(account.clone(), object.clone(), budget.clone())?;
        let retry = RetryLayer::new(RetryPolicy::default());
        // Telemetry outermost: `weld_calls_total{service}` counts the pages callers asked for, a
        // page retried three times and then fetched counting once.
        let list = ServiceBuilder::new()
            .layer(TelemetryLayer::new("hubspot_list"))
            .layer(retry.clone())
            .layer(RateLimitLayer::shared(budget))
            .layer(TimeoutLayer::new(account.timeout + Duration::from_secs(1)))
            .service(client.clone());
        let search = ServiceBuilder::new()
            .layer(TelemetryLayer::new("hubspot_search"))
            .layer(retry)
            .layer(RateLimitLayer::shared(limits.searches.clone()))
            .layer(TimeoutLayer::new(account.timeout + Duration::from_secs(1)))
            .service(client);
        Ok(HubSpotPages {
            account,
            object,
            list: BoxCloneSyncService::new(list),
            search: BoxCloneSyncService::new(search),
        })
    }
}

impl HubSpotPages {
    fn settle(&self, now: i64) -> i64 {
        now - self.account.settle_delay.as_millis() as i64
    }

    /// One list page, its property list split across requests when the URL would be too long.
    async fn list_page(&self, archived: bool, after: Option<String>) -> Result<Listed, BoxError> {
        let properties = self.object.properties();
        let whole = Client::list_url(
            &self.account,
            &self.object,
            archived,
            after.as_deref(),
            &properties,
        );
        if whole.len() <= self.account.max_url_bytes {
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
        // Split: each part asks for the same page with some of the properties (see `split`).
        let base = Client::list_url(&self.account, &self.object, archived, after.as_deref(), &[])
            .len()
            + 12;
        let room = self.account.max_url_bytes.saturating_sub(base).max(64);
        let mut merged = Merged::default();
        for part in split::parts(properties, room) {
            let body = self
                .list
                .clone()
                .oneshot(Call::List {
                    archived,
                    after: after.clone(),
                    properties: part,
                })
                .await?;
            merged.add(&body)?;
        }
        merged.into_listed()
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
        let modified = self.object.modified_property();
        let body = json!({
            "filterGroups": [{"filters": [
                {"propertyName": modified, "operator": "GTE", "value": from.to_string()},
                {"propertyName": modified, "operator": "LTE", "value": until.to_string()},
                {"propertyName": "hs_object_id", "operator": "GT", "value": last_id.to_string()},
            ]}],
            "sorts": [{"propertyName": "hs_object_id", "direction": "ASCENDING"}],
            "properties": self.object.properties(),
            "limit": self.account.search_limit,
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
