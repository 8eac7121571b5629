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
            // One token, refilled every 1/n s: searches evenly spaced, never more than n in a
            // second plus the one at its edge. A bucket of n tokens would let 2n through in one
            // rolling second (n at once, n refilled), past HubSpot's limit of 5.
            searches: Arc::new(TokenBucket::new(
                1,
                Duration::from_secs(1) / config.searches_per_second.max(1),
            )),
        }
    }
}
