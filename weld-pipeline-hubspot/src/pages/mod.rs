//! The page fetcher: one page of a sync per call, behind its layers, moving the position on.
//!
//! A page is read in two steps. First, which phase it reads (`next`): where the checkpoint
//! stands, unless the run must start over with a full read (a first sync, another property
//! set, a refresh due) or reconcile (a sweep due); a finished run's next page
//! opens a new window. Then the reader of that phase, one module each:
//!
//! - `full`: the full read, live records by search, then the archived listing, compared with
//!   the store's inventory as it goes so that it ends with the store equal to HubSpot;
//! - `window`: an incremental window, by search, then those archived inside it;
//! - `sweep`: the reconciliation sweep of HubSpot's ids against the store's inventory;
//! - `reference`: owners and pipelines, read whole on every run.
//!
//! The phases are made of the same kinds of page, each in a module of its own: `search` (a
//! search page re-anchored after the last id), `list` (a list page, its property list split
//! when the URL would be too long), `archived` (the archived listing, by id past its first page
//! when the list is split). `reader` holds what they all read with (the object, the call
//! stacks, the calls read ahead, records by id), `object_type` how URLs name the object,
//! `discovery` which properties a page asks for, and `inventory` the store's inventory read
//! ahead beside a pass over the live ids (the sweep's and the full read's).

mod archived;
mod discovery;
mod full;
mod inventory;
mod list;
mod next;
mod object_type;
mod reader;
mod reference;
mod search;
mod sweep;
mod window;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tower::Service;
use weld_pipeline::source::{Page, PageRequest};
use weld_pipeline::{BoxError, Error, Timestamp};

use self::discovery::Discovery;
use self::next::{Rules, Why};
use self::reader::Reader;
use self::reference::Reference;
use self::window::Window;
use crate::calls::Calls;
use crate::position::{position, Position};
use crate::properties::PropertySet;
use crate::{AccountLimits, HubSpotAccount, HubSpotObject};

/// Fetches one page of a HubSpot sync: a `Service<PageRequest>` for [`Pages`](weld_pipeline::source::Pages).
#[derive(Clone)]
pub struct HubSpotPages {
    reader: Reader,
    /// The properties discovered, and whether the store was told their types.
    discovery: Arc<Discovery>,
    /// The reconciliation sweep in progress: what it learnt of HubSpot's archived ids and read
    /// ahead of the store's inventory. Held across a page's calls (pages of a stream come one
    /// at a time).
    sweeping: Arc<tokio::sync::Mutex<Option<sweep::State>>>,
    /// The full read in progress: its comparison with the store's inventory (see `full`).
    full: Arc<tokio::sync::Mutex<Option<full::State>>>,
}

impl std::fmt::Debug for HubSpotPages {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubSpotPages")
            .field("account", &self.reader.account)
            .field("object", &self.reader.object)
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
        let calls = Calls::new(&account, limits)?;
        Ok(HubSpotPages {
            reader: Reader::new(account, object, calls),
            discovery: Arc::default(),
            sweeping: Arc::default(),
            full: Arc::default(),
        })
    }
}

impl HubSpotPages {
    async fn page(self, request: PageRequest) -> Result<Page, BoxError> {
        let now = Timestamp::now().as_millis();
        let at = position(&request.cursor)?;
        let object = &self.reader.object;
        if let Some(reference) = Reference::of(&object.object_type) {
            return self.reader.reference_page(reference, at, now).await;
        }
        // A run's first page discovers the properties again: the portal may have new ones.
        let fresh = matches!(at, None | Some(Position::Done { .. }));
        if fresh {
            self.reader.lookahead.clear();
        }
        if fresh && object.properties.is_none() && !self.sweep_starts(&at, &request, now) {
            if let Some(previous) = self.discovery.last() {
                return self.page_guessing(previous, at, &request, now).await;
            }
        }
        let describing = request.catalog.is_some();
        let (set, schema) = self
            .discovery
            .property_set(&self.reader, fresh, describing)
            .await?;
        if let Some(schema) = &schema {
            self.discovery.describe(&request, schema).await;
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
        let (defined, page) = futures::join!(self.reader.definitions(), guess);
        let defined = defined?;
        let set = self.discovery.discovered(&defined);
        self.discovery.describe(request, &defined.schema).await;
        if set == previous {
            return page;
        }
        self.page_with(set, at, request, now).await
    }

    /// What decides where a page with property fingerprint `properties` starts; `calculated`
    /// when its set has a property HubSpot calculates.
    fn rules(&self, properties: u64, calculated: bool, request: &PageRequest) -> Rules {
        let object = &self.reader.object;
        Rules {
            properties,
            refreshes: !object.associations.is_empty() || calculated,
            refresh: object.refresh,
            sweep_every: object.sweep_every,
            can_sweep: request.inventory.is_some(),
            settle_delay: self.reader.account.settle_delay,
        }
    }

    /// Whether a run starting at `at` begins with a reconciliation sweep (whose pages keep a
    /// state of their own, never read on a guess).
    fn sweep_starts(&self, at: &Option<Position>, request: &PageRequest, now: i64) -> bool {
        let rules = self.rules(0, false, request);
        matches!(at, Some(Position::Done { swept_at, .. }) if rules.sweep_due(*swept_at, now))
            && rules.can_sweep
    }

    /// A page read with the property set `set`, from `at`: the phase `next` decides, read by
    /// its reader.
    async fn page_with(
        &self,
        set: PropertySet,
        at: Option<Position>,
        request: &PageRequest,
        now: i64,
    ) -> Result<Page, BoxError> {
        let properties = set.fingerprint_with(&self.reader.object.associations);
        let rules = self.rules(properties, set.calculated(), request);
        let (at, why) = rules.start(at, now);
        self.tell(why, &set);
        self.read(at, &set, properties, request).await
    }

    /// The page at `at`, read by its phase's reader.
    async fn read(
        &self,
        at: Position,
        set: &PropertySet,
        properties: u64,
        request: &PageRequest,
    ) -> Result<Page, BoxError> {
        let reader = &self.reader;
        let window = Window::of(&at, properties);
        match (at, window) {
            (at @ Position::Full { .. }, _) => reader.full_page(&self.full, at, set, request).await,
            (at @ Position::FullArchived { .. }, _) => {
                let page = reader.full_archived_page(&self.full, at, set, request);
                page.await
            }
            (Position::Window { last_id, .. }, Some(window)) => {
                reader.window_page(window, last_id, set).await
            }
            (Position::WindowArchived { after, .. }, Some(window)) => {
                reader.window_archived_page(window, after, set).await
            }
            (
                Position::Sweep {
                    until,
                    started_at,
                    stage,
                    full_at,
                    ..
                },
                _,
            ) => {
                let sweep = sweep::Sweep {
                    until,
                    started_at,
                    properties,
                    full_at,
                };
                let page = reader.sweep_page(&self.sweeping, sweep, stage, set, request);
                page.await
            }
            _ => {
                // `FullLive` and `Reference` have fingerprint 0, never a set's: restarted as
                // `Full`; a finished run is followed by a window (see `next`).
                Err(Box::new(Error::Bug(
                    "a position of another kind of sync is restarted, not read".into(),
                )))
            }
        }
    }

    /// Tells the log why a page starts over or skips a sweep.
    fn tell(&self, why: Why, set: &PropertySet) {
        let object = &self.reader.object;
        match why {
            Why::PropertiesChanged => tracing::info!(
                object = %object.object_type,
                properties = set.names().len(),
                associations = ?object.associations,
                "the property set changed: a full sync reads every record again with it"
            ),
            Why::RefreshDue => tracing::info!(
                object = %object.object_type,
                associations = ?object.associations,
                calculated = set.calculated(),
                "refresh: every record is read again, for its links and calculated properties"
            ),
            Why::SweepSkipped => {
                tracing::debug!(object = %object.object_type, "no store to reconcile with: the sweep is skipped");
            }
            Why::Resumed | Why::First | Why::SweepDue => {}
        }
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
