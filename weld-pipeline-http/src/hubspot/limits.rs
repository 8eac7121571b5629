//! The rate limits of one account, shared by every source reading from it.

use std::sync::Arc;
use std::time::Duration;

use weld_pipeline::middleware::{BudgetPacer, TokenBucket};

use super::HubSpotAccount;

/// The rate limits of one HubSpot account, shared by all the sources reading from it.
#[derive(Clone, Debug)]
pub struct AccountLimits {
    /// The account's call budget per ten seconds, paced by the rate-limit headers.
    pub(super) budget: Arc<BudgetPacer>,
    /// The search endpoint's own limit, a few calls per second.
    pub(super) searches: Arc<TokenBucket>,
}

impl AccountLimits {
    /// Limits at the account's rates (`per_ten_seconds`, `searches_per_second`).
    pub fn new(config: &HubSpotAccount) -> Self {
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
