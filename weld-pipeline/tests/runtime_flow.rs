//! The controller and worker runtimes over the in-memory transport, on real sled files in temp
//! directories: the flows of `weld_pipeline::testing::flows`, which every transport passes.

use weld_pipeline::testing::flows;
use weld_pipeline::transport::MemoryTransport;

macro_rules! in_memory {
    ($($flow:ident),* $(,)?) => {$(
        #[test]
        fn $flow() {
            flows::$flow(&MemoryTransport::new());
        }
    )*};
}

in_memory!(
    a_started_stream_is_delivered_complete_and_once_with_its_run_recorded,
    a_stream_waits_pending_until_a_worker_connects_in_either_order,
    restart_of_both_sides_mid_run_loses_nothing_and_duplicates_nothing,
    outbox_backpressure_pauses_the_source_while_the_controller_is_away_and_nothing_is_dropped,
    a_worker_restarted_mid_run_resends_its_outbox_instead_of_refetching,
    stop_is_idempotent_and_no_page_starts_after_it_returns,
    restart_elsewhere_a_stream_whose_worker_goes_away_is_reassigned_and_completes,
);
