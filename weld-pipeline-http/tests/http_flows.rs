//! The runtime flows of the reliability model over the HTTP transport: the same bodies the
//! in-memory and TCP transports pass.

mod support;

use support::{quick_config, HttpNetwork};
use weld_pipeline::testing::flows;

macro_rules! over_http {
    ($($flow:ident),* $(,)?) => {$(
        #[test]
        fn $flow() {
            flows::$flow(&HttpNetwork::new(quick_config()));
        }
    )*};
}

over_http!(
    a_started_stream_is_delivered_complete_and_once_with_its_run_recorded,
    a_stream_waits_pending_until_a_worker_connects_in_either_order,
    restart_of_both_sides_mid_run_loses_nothing_and_duplicates_nothing,
    outbox_backpressure_pauses_the_source_while_the_controller_is_away_and_nothing_is_dropped,
    a_worker_restarted_mid_run_resends_its_outbox_instead_of_refetching,
    stop_is_idempotent_and_no_page_starts_after_it_returns,
    restart_elsewhere_a_stream_whose_worker_goes_away_is_reassigned_and_completes,
);
