//! The page fetcher: one page of a sync per call, behind its layers, moving the position on.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use weld_pipeline::sync::Locked;

use bytes::Bytes;
use serde_json::json;
use tower::util::BoxCloneSyncService;
use tower::{Service, ServiceBuilder, ServiceExt};
use weld_pipeline::middleware::{
    RateLimitLayer, RetryLayer, RetryPolicy, TelemetryLayer, TimeoutLayer,
};
use weld_pipeline::source::{Field, FieldKind, Page, PageRequest, Schema};
use weld_pipeline::{BoxError, Error, Timestamp};

use super::associations;
use super::client::{Call, Client};
use super::lookahead::{beside, Ahead, Lookahead};
use super::parse::{parse, Listed};
use super::position::{checkpoint, position, Position, SweepStage};
use super::properties::{parse_definitions, PropertySet};
use super::split::{self, Merged};
use super::sweep;
use super::{AccountLimits, HubSpotAccount, HubSpotObject};

pub(super) type CallService = BoxCloneSyncService<Call, Bytes, BoxError>;

/// Fetches one page of a HubSpot sync: a `Service<PageRequest>` for [`Pages`](weld_pipeline::source::Pages).
#[derive(Clone)]
pub struct HubSpotPages {
    pub(super) account: Arc<HubSpotAccount>,
    pub(super) object: Arc<HubSpotObject>,
    pub(super) list: CallService,
    pub(super) search: CallService,
    /// Property definitions, schemas, reference data.
    meta: CallService,
    /// Association batch reads.
    pub(super) links: CallService,
    /// The property set last discovered, for the pages of a run after its first.
    discovered: Arc<std::sync::Mutex<Option<PropertySet>>>,
    /// Whether a listed property set's definitions were read (once per source).
    listed_described: Arc<AtomicBool>,
    /// Whether the store refused the stream's fields at the last try (told once, not per run).
    describe_failing: Arc<AtomicBool>,
    /// The object type as URLs name it: the configured one, or a custom object's
    /// `objectTypeId` found by its name.
    resolved: Arc<std::sync::Mutex<Option<Arc<str>>>>,
    /// The reconciliation sweep in progress: what it learnt of HubSpot's archived ids and read
    /// ahead of the store's inventory. Held across a page's calls (pages of a stream come one
    /// at a time).
    pub(super) sweeping: Arc<tokio::sync::Mutex<Option<sweep::State>>>,
    /// The next page's call, sent while the current page was finished (see `lookahead`).
    lookahead: Arc<Lookahead>,
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
        let client = Client::new(account.clone(), budget.clone())?;
        let retry = RetryLayer::new(RetryPolicy::default());
        let timeout = account.timeout + Duration::from_secs(1);
        // Telemetry outermost: `weld_calls_total{service}` counts the pages callers asked for, a
        // page retried three times and then fetched counting once.
        macro_rules! stack {
            ($service:literal, $pacer:expr) => {
                BoxCloneSyncService::new(
                    ServiceBuilder::new()
                        .layer(TelemetryLayer::new($service))
                        .layer(retry.clone())
                        .layer(RateLimitLayer::shared($pacer))
                        .layer(TimeoutLayer::new(timeout))
                        .service(client.clone()),
                )
            };
        }
        Ok(HubSpotPages {
            list: stack!("hubspot_list", budget.clone()),
            search: stack!("hubspot_search", limits.searches.clone()),
            meta: stack!("hubspot_properties", budget.clone()),
            links: stack!("hubspot_associations", budget),
            account,
            object,
            discovered: Arc::default(),
            listed_described: Arc::default(),
            describe_failing: Arc::default(),
            sweeping: Arc::default(),
            resolved: Arc::default(),
            lookahead: Arc::default(),
        })
    }
}

impl HubSpotPages {
    fn settle(&self, now: i64) -> i64 {
        now - self.account.settle_delay.as_millis() as i64
    }

    /// The object type as URLs name it (see [`object_type_in_urls`]), resolved once.
    pub(super) async fn object_type(&self) -> Result<Arc<str>, BoxError> {
        if let Some(resolved) = self.resolved.locked().clone() {
            return Ok(resolved);
        }
        let configured = self.object.object_type.as_str();
        let resolved: Arc<str> = if object_type_in_urls(configured) {
            configured.into()
        } else {
            let body = self.meta.clone().oneshot(Call::Schemas).await?;
            custom_object_id(&body, configured)?.into()
        };
        *self.resolved.locked() = Some(resolved.clone());
        Ok(resolved)
    }

    /// The properties this page asks for: the stream's list, or every property of the object,
    /// discovered anew when `fresh` (a run's first page) and otherwise as last discovered. With
    /// the set, the fields to describe to the store when definitions were read for it: at
    /// every discovery, and for a listed set once per source when there is a store to tell
    /// (`describing`; a failure to read them then costs the typed fields, not the run).
    async fn property_set(
        &self,
        fresh: bool,
        describing: bool,
    ) -> Result<(PropertySet, Option<Schema>), BoxError> {
        if let Some(listed) = &self.object.properties {
            let set = PropertySet::new(listed.clone());
            if !fresh || !describing || self.listed_described.swap(true, Ordering::Relaxed) {
                return Ok((set, None));
            }
            let schema = match self.definitions().await {
                Ok(defined) => Some(Schema::new(set.names().iter().map(|name| {
                    let kind = defined
                        .fields
                        .iter()
                        .find(|f| &f.name == name)
                        .map_or(FieldKind::Text, |f| f.kind);
                    Field {
                        name: name.clone(),
                        kind,
                    }
                }))),
                Err(error) => {
                    tracing::warn!(object = %self.object.object_type, error = %error, "the property definitions cannot be read: the listed properties are stored, untyped");
                    None
                }
            };
            return Ok((set, schema));
        }
        if !fresh {
            if let Some(set) = self.discovered.locked().clone() {
                return Ok((set, None));
            }
        }
        let schema = self.definitions().await?;
        let set = PropertySet::new(schema.fields.iter().map(|f| f.name.clone()).collect());
        *self.discovered.locked() = Some(set.clone());
        Ok((set, Some(schema)))
    }

    /// Every property the account defines for the object, with its type.
    async fn definitions(&self) -> Result<Schema, BoxError> {
        let object_type = self.object_type().await?;
        let body = self
            .meta
            .clone()
            .oneshot(Call::Properties {
                object_type: object_type.clone(),
            })
            .await?;
        parse_definitions(&body, &object_type, self.account.max_properties)
    }

    /// Tells the store the fields of the stream's records, when it can be told. The records do
    /// not depend on it: a failure is logged, and the next run tells it again.
    async fn describe(&self, request: &PageRequest, schema: &Schema) {
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

    /// The calls of one list page: one, or its property list split across several when the
    /// URL would be too long, each asking for the same page (see `split`).
    async fn list_calls(
        &self,
        archived: bool,
        after: Option<String>,
        set: &PropertySet,
    ) -> Result<Vec<Call>, BoxError> {
        let properties = set.names().to_vec();
        let object_type = self.object_type().await?;
        let url = |properties: &[String]| {
            Client::list_url(
                &self.account,
                &object_type,
                archived,
                after.as_deref(),
                properties,
            )
            .len()
        };
        let parts = if url(&properties) <= self.account.max_url_bytes {
            vec![properties]
        } else {
            let room = self
                .account
                .max_url_bytes
                .saturating_sub(url(&[]) + 12)
                .max(64);
            split::parts(properties, room)
        };
        Ok(parts
            .into_iter()
            .map(|properties| Call::List {
                object_type: object_type.clone(),
                archived,
                after: after.clone(),
                properties,
            })
            .collect())
    }

    /// The list call of a page of archived ids (and their archive times), from `after`.
    pub(super) async fn archived_ids_call(&self, after: Option<String>) -> Result<Call, BoxError> {
        Ok(Call::List {
            object_type: self.object_type().await?,
            archived: true,
            after,
            properties: vec!["hs_object_id".into()],
        })
    }

    /// The calls of the archived listing's first page (see [`HubSpotPages::archived_page`]).
    async fn archived_first_calls(&self, set: &PropertySet) -> Result<Vec<Call>, BoxError> {
        self.list_calls(true, None, set).await
    }

    /// One page of the archived listing, with every property of `set`: of the records archived
    /// in `within` (`[from, until)`), or all of them. HubSpot's archived listing has no filter,
    /// so a run pages through every archived record the account holds. When the property list
    /// fits one list URL, a page is one call. When it would be split (hundreds of properties:
    /// a part per 2,000 bytes of URL), the first page is still read whole, its parts sent
    /// ahead with the last search page (most listings have one page: no round trip is added);
    /// every later page lists the ids only, in one call, and reads the records it wants by
    /// batch read, the properties in the body, 100 a call: in a window, most often none.
    async fn archived_page(
        &self,
        after: Option<String>,
        set: &PropertySet,
        within: Option<(i64, i64)>,
    ) -> Result<Listed, BoxError> {
        let wanted = |archived_at: &Option<i64>| {
            within.is_none_or(|(from, until)| {
                archived_at.is_none_or(|at| (from..until).contains(&at))
            })
        };
        if after.is_none() || self.list_calls(true, after.clone(), set).await?.len() == 1 {
            let mut listed = self.list_page(true, after, set).await?;
            listed
                .records
                .retain(|(_, archived_at)| wanted(archived_at));
            return Ok(listed);
        }
        let call = self.archived_ids_call(after).await?;
        let listed = parse(&self.lookahead.call(&self.list, call).await?)?;
        let mut ahead = match &listed.next {
            Some(next) => self.ahead(vec![self.archived_ids_call(Some(next.clone())).await?]),
            None => Vec::new(),
        };
        let ids: Vec<u64> = listed
            .records
            .iter()
            .filter(|(_, archived_at)| wanted(archived_at))
            .filter_map(|(record, _)| record.id.parse().ok())
            .collect();
        let records = if ids.is_empty() {
            beside(&mut ahead, std::future::ready(())).await;
            Vec::new()
        } else {
            beside(&mut ahead, self.read_by_id(true, &ids, set)).await?
        };
        self.lookahead.keep(ahead);
        Ok(Listed {
            records: records.into_iter().map(|record| (record, None)).collect(),
            next: listed.next,
            merges: Vec::new(),
            total: None,
        })
    }

    /// One list page. Its first call decides the page; the other parts of a split property list
    /// then go out together, and, when the first answer names a next page, that page's calls
    /// are sent ahead beside them (see `lookahead`).
    async fn list_page(
        &self,
        archived: bool,
        after: Option<String>,
        set: &PropertySet,
    ) -> Result<Listed, BoxError> {
        let mut parts = self.list_calls(archived, after, set).await?;
        let next_page = |next: &str| -> Vec<Call> {
            parts
                .iter()
                .map(|call| match call {
                    Call::List {
                        object_type,
                        archived,
                        properties,
                        ..
                    } => Call::List {
                        object_type: object_type.clone(),
                        archived: *archived,
                        after: Some(next.to_string()),
                        properties: properties.clone(),
                    },
                    other => other.clone(),
                })
                .collect()
        };
        let mut ahead = Vec::new();
        let body = self.lookahead.call(&self.list, parts[0].clone()).await?;
        if parts.len() == 1 {
            // One part: the records stay the bytes HubSpot sent.
            let listed = parse(&body)?;
            if let Some(next) = &listed.next {
                ahead = self.send_ahead(next_page(next)).await;
            }
            self.lookahead.keep(ahead);
            return Ok(listed);
        }
        let mut merged = Merged::default();
        merged.add(&body)?;
        if merged.is_empty() {
            // The first part decides which records are on the page: none, no more parts
            // (what was sent of them ahead is dropped).
            self.lookahead.keep([]);
            return merged.into_listed();
        }
        if let Some(next) = merged.next() {
            ahead = next_page(next)
                .into_iter()
                .map(|call| Ahead::start(&self.list, call))
                .collect();
        }
        let rest = parts
            .split_off(1)
            .into_iter()
            .map(|call| self.lookahead.call(&self.list, call));
        let bodies = beside(&mut ahead, futures::future::try_join_all(rest)).await?;
        for body in &bodies {
            merged.add(body)?;
        }
        self.lookahead.keep(ahead);
        merged.into_listed()
    }

    /// Starts `calls` ahead of the page that will make them, each going out as its budget
    /// allows.
    async fn send_ahead(&self, calls: Vec<Call>) -> Vec<Ahead> {
        let mut ahead = self.ahead(calls);
        beside(&mut ahead, std::future::ready(())).await;
        ahead
    }

    /// `calls` to send ahead of the page that will make them, not sent yet; one already sent
    /// ahead is carried on.
    fn ahead(&self, calls: Vec<Call>) -> Vec<Ahead> {
        calls
            .into_iter()
            .map(|call| {
                self.lookahead.take(&call).unwrap_or_else(|| {
                    let service = match call {
                        Call::Search { .. } => &self.search,
                        _ => &self.list,
                    };
                    Ahead::start(service, call)
                })
            })
            .collect()
    }

    async fn page(self, request: PageRequest) -> Result<Page, BoxError> {
        let now = Timestamp::now().as_millis();
        let at = position(&request.cursor)?;
        if let Some(reference) = Reference::of(&self.object.object_type) {
            return self.reference_page(reference, at, now).await;
        }
        // A run's first page discovers the properties again: the portal may have new ones.
        let fresh = matches!(at, None | Some(Position::Done { .. }));
        if fresh {
            self.lookahead.clear();
        }
        if fresh && self.object.properties.is_none() && !self.sweep_starts(&at, &request, now) {
            let previous = self.discovered.locked().clone();
            if let Some(previous) = previous {
                return self.page_guessing(previous, at, &request, now).await;
            }
        }
        let (set, schema) = self.property_set(fresh, request.catalog.is_some()).await?;
        if let Some(schema) = &schema {
            self.describe(&request, schema).await;
        }
        self.page_with(set, at, &request, now).await
    }

    /// A run's first page, read with the property set the last run discovered while the
    /// definitions are read again beside it: the portal's properties rarely change, and the
    /// page then costs one round trip, not two. When they did change, the page is read again
    /// with the new set: the guessed page is dropped, and the calls it read ahead, made with the
    /// old set, can match none made with the new one.
    async fn page_guessing(
        &self,
        previous: PropertySet,
        at: Option<Position>,
        request: &PageRequest,
        now: i64,
    ) -> Result<Page, BoxError> {
        let guess = self.page_with(previous.clone(), at.clone(), request, now);
        let (schema, page) = futures::join!(self.definitions(), guess);
        let schema = schema?;
        let set = PropertySet::new(schema.fields.iter().map(|f| f.name.clone()).collect());
        *self.discovered.locked() = Some(set.clone());
        self.describe(request, &schema).await;
        if set == previous {
            return page;
        }
        self.page_with(set, at, request, now).await
    }

    /// Whether a run starting at `at` begins with a reconciliation sweep (whose pages keep a
    /// state of their own, never read on a guess).
    fn sweep_starts(&self, at: &Option<Position>, request: &PageRequest, now: i64) -> bool {
        matches!(at, Some(Position::Done { swept_at, .. }) if self.sweep_due(*swept_at, now))
            && request.inventory.is_some()
    }

    /// A page read with the property set `set`, from `at`.
    async fn page_with(
        &self,
        set: PropertySet,
        at: Option<Position>,
        request: &PageRequest,
        now: i64,
    ) -> Result<Page, BoxError> {
        let properties = set.fingerprint_with(&self.object.associations);
        let full = Position::Full {
            last_id: 0,
            started_at: now,
            properties,
        };
        let at = match at {
            None => full,
            Some(at) if at.properties() != properties => {
                tracing::info!(
                    object = %self.object.object_type,
                    properties = set.names().len(),
                    associations = ?self.object.associations,
                    "the property set changed: a full sync reads every record again with it"
                );
                full
            }
            Some(Position::Done { full_at, .. }) if self.refresh_due(full_at, now) => {
                tracing::info!(
                    object = %self.object.object_type,
                    associations = ?self.object.associations,
                    "association refresh: every record is read again with its links"
                );
                full
            }
            Some(Position::Done {
                until,
                full_at,
                swept_at,
                ..
            }) if self.sweep_due(swept_at, now) => match &request.inventory {
                Some(_) => Position::Sweep {
                    until,
                    started_at: now,
                    stage: SweepStage::Archived { after: None },
                    properties,
                    full_at,
                },
                None => {
                    tracing::debug!(object = %self.object.object_type, "no store to reconcile with: the sweep is skipped");
                    Position::Done {
                        until,
                        properties,
                        full_at,
                        swept_at: now,
                    }
                }
            },
            Some(at) => at,
        };
        if let Position::Sweep {
            until,
            started_at,
            stage,
            full_at,
            ..
        } = at
        {
            let sweep = sweep::Sweep {
                until,
                started_at,
                properties,
                full_at,
            };
            return self.sweep_page(sweep, stage, &set, request).await;
        }
        let (records, next) = match at {
            Position::Full {
                last_id,
                started_at,
                ..
            } => {
                let archived = self.archived_first_calls(&set).await?;
                let (listed, last) = self.search(vec![], last_id, &set, archived).await?;
                let next = match last {
                    Some(last_id) => Position::Full {
                        last_id,
                        started_at,
                        properties,
                    },
                    None => Position::FullArchived {
                        after: None,
                        started_at,
                        properties,
                    },
                };
                (listed.records, next)
            }
            Position::FullLive { .. } | Position::Reference { .. } | Position::Sweep { .. } => {
                // The first two have fingerprint 0, never a set's: restarted as `Full` above; a
                // sweep's pages are read above.
                return Err(Box::new(Error::Bug(
                    "a position of another kind of sync is restarted, not read".into(),
                )));
            }
            Position::FullArchived {
                after, started_at, ..
            } => {
                let listed = self.archived_page(after, &set, None).await?;
                let next = match listed.next {
                    Some(after) => Position::FullArchived {
                        after: Some(after),
                        started_at,
                        properties,
                    },
                    None => Position::Done {
                        until: self.settle(started_at),
                        properties,
                        full_at: started_at,
                        // A full read repairs all but what vanished: the next sweep is a day on.
                        swept_at: started_at,
                    },
                };
                (listed.records, next)
            }
            Position::Done {
                until,
                full_at,
                swept_at,
                ..
            } => {
                // A new run: its window runs from the last one's end to now minus the settle
                // delay. Its first page is the window's first search.
                let window_end = self.settle(now).max(until);
                let window = Window {
                    from: until,
                    until: window_end,
                    full_at,
                    swept_at,
                };
                return Box::pin(self.window_page(window, 0, &set, properties)).await;
            }
            Position::Window {
                from,
                until,
                last_id,
                full_at,
                swept_at,
                ..
            } => {
                let window = Window {
                    from,
                    until,
                    full_at,
                    swept_at,
                };
                return self.window_page(window, last_id, &set, properties).await;
            }
            Position::WindowArchived {
                from,
                until,
                after,
                full_at,
                swept_at,
                ..
            } => {
                let listed = self.archived_page(after, &set, Some((from, until))).await?;
                let records = listed.records;
                let next = match listed.next {
                    Some(after) => Position::WindowArchived {
                        from,
                        until,
                        after: Some(after),
                        properties,
                        full_at,
                        swept_at,
                    },
                    None => Position::Done {
                        until,
                        properties,
                        full_at,
                        swept_at,
                    },
                };
                (records, next)
            }
        };
        Ok(Page {
            records: records.into_iter().map(|(record, _)| record).collect(),
            last: matches!(next, Position::Done { .. }),
            cursor: checkpoint(&next)?,
            repaired: 0,
        })
    }

    /// One page of reference data. Each run reads it whole (it is small, and has no change
    /// tracking to search on): owners page by page, live then archived; pipelines in one call.
    async fn reference_page(
        &self,
        reference: Reference,
        at: Option<Position>,
        now: i64,
    ) -> Result<Page, BoxError> {
        let (archived, after) = match at {
            Some(Position::Reference { archived, after }) => (archived, after),
            _ => (false, None),
        };
        let done = Position::Done {
            until: now,
            properties: 0,
            full_at: 0,
            swept_at: 0,
        };
        let (listed, next) = match reference {
            Reference::Owners => {
                let call = Call::Owners {
                    archived,
                    after: after.clone(),
                };
                let listed = parse(&self.meta.clone().oneshot(call).await?)?;
                let next = match (&listed.next, archived) {
                    (Some(after), _) => Position::Reference {
                        archived,
                        after: Some(after.clone()),
                    },
                    (None, false) => Position::Reference {
                        archived: true,
                        after: None,
                    },
                    (None, true) => done,
                };
                (listed, next)
            }
            Reference::Pipelines(object_type) => {
                let call = Call::Pipelines {
                    object_type: object_type.into(),
                };
                (parse(&self.meta.clone().oneshot(call).await?)?, done)
            }
        };
        Ok(Page {
            records: listed
                .records
                .into_iter()
                .map(|(record, _)| record)
                .collect(),
            last: matches!(next, Position::Done { .. }),
            cursor: checkpoint(&next)?,
            repaired: 0,
        })
    }

    /// One search page: the records matching `filters` after id `after`, by id, with every
    /// property of `set` (in the body: no URL limit), 200 a page. The last id on it, if more may
    /// follow: the next page re-anchors there instead of paging by offset, so no query reaches
    /// the 10,000-result cap. That next page's search is sent as soon as this one's answer is
    /// in, beside the reading of its associations (see `lookahead`); and the calls `then`
    /// that follow the last page, with the last page or, when the search's `total` says the
    /// next page is the last, with this one.
    async fn search(
        &self,
        filters: Vec<serde_json::Value>,
        after: u64,
        set: &PropertySet,
        then: Vec<Call>,
    ) -> Result<(Listed, Option<u64>), BoxError> {
        let object_type = self.object_type().await?;
        let call = |after: u64| {
            let mut filters = filters.clone();
            filters.push(id_after(after));
            Call::Search {
                object_type: object_type.clone(),
                body: json!({
                    "filterGroups": [{"filters": filters}],
                    "sorts": [{"propertyName": "hs_object_id", "direction": "ASCENDING"}],
                    "properties": set.names(),
                    "limit": self.account.search_limit,
                }),
            }
        };
        let answer = self.lookahead.call(&self.search, call(after)).await?;
        let mut listed = parse(&answer)?;
        let last = listed
            .records
            .iter()
            .filter_map(|(r, _)| r.id.parse::<u64>().ok())
            .max();
        let more = listed.next.is_some();
        // When the next page is the last, what follows it is sent ahead too.
        let next = match last {
            Some(last) if more => {
                let limit = u64::from(self.account.search_limit);
                let mut next = vec![call(last)];
                if listed.total.is_some_and(|total| total <= 2 * limit) {
                    next.extend(then);
                }
                next
            }
            _ => then,
        };
        // The next calls are sent, or wait for their turn after this page's own.
        let mut ahead = self.ahead(next);
        if self.object.associations.is_empty() {
            beside(&mut ahead, std::future::ready(())).await;
        } else {
            let ids: Vec<String> = listed.records.iter().map(|(r, _)| r.id.clone()).collect();
            let reading =
                associations::read(&self.links, &object_type, &self.object.associations, &ids);
            let links = beside(&mut ahead, reading).await?;
            associations::attach(listed.records.iter_mut().map(|(r, _)| r), &links);
        }
        self.lookahead.keep(ahead);
        // The records merged into those of the page are archived with `merged_into` (after the
        // last id is taken: theirs are not positions in this listing).
        let merged: Vec<_> = listed
            .merges
            .iter()
            .map(|m| (m.amendment(), None))
            .collect();
        listed.records.extend(merged);
        Ok((listed, last.filter(|_| more)))
    }

    /// Whether a stream with associations is due to read every record again: its last full
    /// read began a refresh interval ago or more.
    fn refresh_due(&self, full_at: i64, now: i64) -> bool {
        let refresh =
            i64::try_from(self.object.associations_refresh.as_millis()).unwrap_or(i64::MAX);
        !self.object.associations.is_empty() && now.saturating_sub(full_at) >= refresh
    }

    /// Whether the reconciliation sweep is due: the last began a sweep interval ago or more.
    fn sweep_due(&self, swept_at: i64, now: i64) -> bool {
        let every = i64::try_from(self.object.sweep_every.as_millis()).unwrap_or(i64::MAX);
        now.saturating_sub(swept_at) >= every
    }

    /// One page of a window: the records modified in it after `last_id`, by id.
    async fn window_page(
        &self,
        window: Window,
        last_id: u64,
        set: &PropertySet,
        properties: u64,
    ) -> Result<Page, BoxError> {
        let Window {
            from,
            until,
            full_at,
            swept_at,
        } = window;
        let modified = self.object.modified_property();
        let (listed, last) = self
            .search(
                vec![
                    json!({"propertyName": modified, "operator": "GTE", "value": from.to_string()}),
                    json!({"propertyName": modified, "operator": "LTE", "value": until.to_string()}),
                ],
                last_id,
                set,
                self.archived_first_calls(set).await?,
            )
            .await?;
        // The window ends when a page comes back with nothing after it.
        let next = match last {
            Some(last_id) => Position::Window {
                from,
                until,
                last_id,
                properties,
                full_at,
                swept_at,
            },
            None => Position::WindowArchived {
                from,
                until,
                after: None,
                properties,
                full_at,
                swept_at,
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
            repaired: 0,
        })
    }
}

/// An incremental window: modification times `[from, until]`, and when the last full read began.
#[derive(Clone, Copy)]
struct Window {
    from: i64,
    until: i64,
    full_at: i64,
    swept_at: i64,
}

/// Reference data a stream can read instead of CRM records: `owners`, or
/// `pipelines:<objectType>`.
enum Reference {
    Owners,
    Pipelines(String),
}

impl Reference {
    fn of(object: &str) -> Option<Reference> {
        if object == "owners" {
            return Some(Reference::Owners);
        }
        object
            .strip_prefix("pipelines:")
            .map(|object_type| Reference::Pipelines(object_type.to_string()))
    }
}

/// HubSpot's own object types, which URLs name as they are.
const STANDARD_TYPES: [&str; 12] = [
    "contacts",
    "companies",
    "deals",
    "tickets",
    "products",
    "line_items",
    "quotes",
    "calls",
    "emails",
    "meetings",
    "notes",
    "tasks",
];

/// Whether URLs take `object_type` as it is: a standard type, an `objectTypeId` (`2-1234567`)
/// or a custom object's fully qualified name (`p1234567_cars`). Anything else is a custom
/// object's name, looked up in the account's schemas.
fn object_type_in_urls(object_type: &str) -> bool {
    let id = object_type.split_once('-').is_some_and(|(a, b)| {
        [a, b]
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
    });
    let qualified = object_type
        .strip_prefix('p')
        .and_then(|rest| rest.split_once('_'))
        .is_some_and(|(portal, _)| {
            !portal.is_empty() && portal.bytes().all(|b| b.is_ascii_digit())
        });
    STANDARD_TYPES.contains(&object_type) || id || qualified
}

/// The `objectTypeId` of the custom object named `name` (or so qualified) in a
/// `GET /crm/v3/schemas` answer.
fn custom_object_id(body: &Bytes, name: &str) -> Result<String, BoxError> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Schema {
        name: String,
        object_type_id: String,
        #[serde(default)]
        fully_qualified_name: Option<String>,
    }
    #[derive(serde::Deserialize)]
    struct Schemas {
        results: Vec<Schema>,
    }
    let schemas: Schemas = serde_json::from_slice(body)
        .map_err(|e| super::parse::unparseable(format!("the custom object schemas: {e}")))?;
    schemas
        .results
        .into_iter()
        .find(|s| s.name == name || s.fully_qualified_name.as_deref() == Some(name))
        .map(|s| s.object_type_id)
        .ok_or_else(|| {
            Box::new(Error::Invalid(format!(
                "no object type named {name:?} in this HubSpot account (neither a standard type \
                 nor a custom object of its schemas)"
            ))) as BoxError
        })
}

/// The search filter of the records after `id`.
pub(super) fn id_after(id: u64) -> serde_json::Value {
    json!({"propertyName": "hs_object_id", "operator": "GT", "value": id.to_string()})
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
