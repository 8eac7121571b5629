//! The call stacks: every call a fetcher makes goes through one of four, each the HTTP client
//! behind the core's layers, and the search body every search of a sync is written with.
//!
//! The layers, outermost first: telemetry (`weld_calls_total{service}`, a call retried counting
//! once), retry (transient errors only), rate limit, timeout. The four stacks differ in their
//! pacer (search has a per-second limit of its own; the rest share the account's budget) and in
//! the service name telemetry counts them under.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::{json, Value};
use tower::util::BoxCloneSyncService;
use tower::ServiceBuilder;
use weld_pipeline::middleware::{
    RateLimitLayer, RetryLayer, RetryPolicy, TelemetryLayer, TimeoutLayer,
};
use weld_pipeline::{BoxError, Error};

use super::client::{Call, Client};
use super::{AccountLimits, HubSpotAccount};

/// One call through its layers: what every reader of a page sends its calls to.
pub(crate) type CallService = BoxCloneSyncService<Call, Bytes, BoxError>;

/// The call stacks of one fetcher.
#[derive(Clone)]
pub(crate) struct Calls {
    /// List pages and batch reads.
    pub(crate) list: CallService,
    /// Search pages.
    pub(crate) search: CallService,
    /// Property definitions, schemas, reference data.
    pub(crate) meta: CallService,
    /// Association batch reads.
    pub(crate) links: CallService,
}

impl Calls {
    /// The stacks of one fetcher of `account`, paced by `limits` (shared by every source of the
    /// account: HubSpot counts calls per account, not per object type).
    ///
    /// # Errors
    ///
    /// When the HTTP client cannot be built.
    pub(crate) fn new(
        account: &Arc<HubSpotAccount>,
        limits: &AccountLimits,
    ) -> Result<Self, Error> {
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
        Ok(Calls {
            list: stack!("hubspot_list", budget.clone()),
            search: stack!("hubspot_search", limits.searches.clone()),
            meta: stack!("hubspot_properties", budget.clone()),
            links: stack!("hubspot_associations", budget),
        })
    }
}

/// The search filter of the records after `id`.
fn id_after(id: u64) -> Value {
    json!({"propertyName": "hs_object_id", "operator": "GT", "value": id.to_string()})
}

/// The body of a search sorted by id and anchored after id `after`: the records matching every
/// filter of `filters` past it, with `properties`, `limit` a page. Each page of a sync
/// re-anchors after the last id read instead of paging on by offset, so no query reaches
/// search's 10,000-result cap.
pub(crate) fn search_after(
    mut filters: Vec<Value>,
    after: u64,
    properties: Value,
    limit: u32,
) -> Value {
    filters.push(id_after(after));
    json!({
        "filterGroups": [{"filters": filters}],
        "sorts": [{"propertyName": "hs_object_id", "direction": "ASCENDING"}],
        "properties": properties,
        "limit": limit,
    })
}
