//! The runtime flows of the reliability model, generic over the network they run on, so that
//! every transport passes the same ones (`weld-pipeline/tests/runtime_flow.rs` runs them in
//! memory, the TCP crate over real sockets). Each side runs in its own tokio runtime
//! ([`ControllerProcess`], [`WorkerProcess`]), so a crash drops it mid-flight.

use std::collections::BTreeSet;
use std::time::Duration;

use super::{wait_until, ControllerProcess, CountingSources, Network, WorkerProcess};
use crate::runtime::{StreamState, WorkerConfig};
use crate::store::RunState;
use crate::StreamName;

const DEADLINE: Duration = Duration::from_secs(60);

fn stream() -> StreamName {
    StreamName::new("contacts").unwrap()
}

/// Every record id stored, paging through the store as the API does.
fn stored_ids<N: Network>(controller: &ControllerProcess<N>) -> Vec<u64> {
    super::stored_ids(&controller.store, &stream())
}

/// Every id from 1 to `n`, each exactly once.
fn assert_exactly<N: Network>(controller: &ControllerProcess<N>, n: u64) {
    let ids = stored_ids(controller);
    assert_eq!(
        ids,
        (1..=n).collect::<Vec<_>>(),
        "every record exactly once"
    );
    let counts = controller.store.counts(&stream()).unwrap();
    assert_eq!(counts.live, n);
}

fn live<N: Network>(controller: &ControllerProcess<N>) -> u64 {
    controller.store.counts(&stream()).unwrap().live
}

fn last_run_state<N: Network>(controller: &ControllerProcess<N>) -> Option<RunState> {
    controller
        .store
        .runs(&stream(), 1)
        .unwrap()
        .first()
        .map(|r| r.state)
}

struct Dirs {
    controller: tempfile::TempDir,
    worker: tempfile::TempDir,
}

fn dirs() -> Dirs {
    Dirs {
        controller: tempfile::tempdir().unwrap(),
        worker: tempfile::tempdir().unwrap(),
    }
}

fn worker_config(dirs: &Dirs) -> WorkerConfig {
    WorkerConfig::new("worker-1", dirs.worker.path())
}

/// See the test of the same name.
pub fn a_started_stream_is_delivered_complete_and_once_with_its_run_recorded<N: Network>(net: &N) {
    let dirs = dirs();
    let controller = ControllerProcess::start(dirs.controller.path(), net);
    let sources = CountingSources::new();
    let worker = WorkerProcess::start(worker_config(&dirs), net, sources.clone());
    wait_until("the worker connects", DEADLINE, || {
        controller.controller.workers() == 1
    });

    let config = CountingSources::config(2_000, 100, 0, 300);
    let status = controller
        .block_on(controller.controller.start_stream(&stream(), config))
        .unwrap();
    assert_eq!(status.state, StreamState::Running);
    assert_eq!(status.worker.as_deref(), Some("worker-1"));

    wait_until("the first run succeeds", DEADLINE, || {
        last_run_state(&controller) == Some(RunState::Succeeded)
    });
    assert_exactly(&controller, 2_000);
    let runs = controller.store.runs(&stream(), 10).unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!((runs[0].records, runs[0].batches), (2_000, 20));
    wait_until("the outbox drains", DEADLINE, || {
        worker.worker.outbox().is_empty()
    });
    worker.shut_down().unwrap();
    controller.crash();
}

/// See the test of the same name.
pub fn a_stream_waits_pending_until_a_worker_connects_in_either_order<N: Network>(net: &N) {
    let dirs = dirs();
    let controller = ControllerProcess::start(dirs.controller.path(), net);
    let config = CountingSources::config(300, 100, 0, 300);
    let status = controller
        .block_on(controller.controller.start_stream(&stream(), config))
        .unwrap();
    assert_eq!(status.state, StreamState::Pending);
    assert_eq!(status.worker, None);

    let worker = WorkerProcess::start(worker_config(&dirs), net, CountingSources::new());
    wait_until("the stream runs on the worker", DEADLINE, || {
        live(&controller) == 300
    });
    // The controller knows the worker: its id, its sources, its stream, and (reported every
    // two seconds) its outbox.
    wait_until("the worker's outbox reported", DEADLINE, || {
        let workers = controller.controller.connected_workers();
        workers.first().is_some_and(|w| w.outbox.is_some())
    });
    let workers = controller.controller.connected_workers();
    assert_eq!(workers.len(), 1, "{workers:?}");
    assert_eq!(workers[0].id, "worker-1");
    assert_eq!(workers[0].sources, vec!["generator".to_string()]);
    assert_eq!(workers[0].streams, vec![stream()]);
    assert_eq!(
        controller
            .block_on(controller.controller.status(&stream()))
            .unwrap()
            .unwrap()
            .state,
        StreamState::Running
    );
    worker.shut_down().unwrap();
    controller.crash();
}

/// See the test of the same name.
pub fn restart_of_both_sides_mid_run_loses_nothing_and_duplicates_nothing<N: Network>(net: &N) {
    let dirs = dirs();
    let controller = ControllerProcess::start(dirs.controller.path(), net);
    let worker = WorkerProcess::start(worker_config(&dirs), net, CountingSources::new());
    let config = CountingSources::config(3_000, 50, 5, 300);
    controller
        .block_on(controller.controller.start_stream(&stream(), config))
        .unwrap();
    wait_until("the run is under way", DEADLINE, || {
        live(&controller) >= 500
    });

    // Both die at once, mid-run, without any shutdown.
    worker.crash();
    controller.crash();

    let controller = ControllerProcess::start(dirs.controller.path(), net);
    let before = live(&controller);
    assert!(
        (500..3_000).contains(&before),
        "{before} records survived the crash"
    );
    assert_eq!(
        controller
            .block_on(controller.controller.status(&stream()))
            .unwrap()
            .unwrap()
            .state,
        StreamState::Pending
    );
    let worker = WorkerProcess::start(worker_config(&dirs), net, CountingSources::new());
    wait_until("the run completes after the restart", DEADLINE, || {
        live(&controller) == 3_000
    });
    wait_until("a run succeeds", DEADLINE, || {
        last_run_state(&controller) == Some(RunState::Succeeded)
    });
    assert_exactly(&controller, 3_000);
    worker.shut_down().unwrap();
    controller.crash();
}

/// See the test of the same name.
pub fn outbox_backpressure_pauses_the_source_while_the_controller_is_away_and_nothing_is_dropped<
    N: Network,
>(
    net: &N,
) {
    let dirs = dirs();
    let controller = ControllerProcess::start(dirs.controller.path(), net);
    let sources = CountingSources::new();
    let mut config = worker_config(&dirs);
    // Room for about five pages of 50 records of ~330 bytes.
    config.outbox.max_bytes = 5 * 50 * 400;
    let worker = WorkerProcess::start(config, net, sources.clone());
    let stream_config = CountingSources::config(5_000, 50, 2, 300);
    controller
        .block_on(controller.controller.start_stream(&stream(), stream_config))
        .unwrap();
    wait_until("the run is under way", DEADLINE, || {
        live(&controller) >= 200
    });

    controller.crash();
    // The worker keeps fetching into its outbox until it is full, then its source waits.
    // The run is paused: its next batch waits for room in the full outbox.
    wait_until("the source is paused by a full outbox", DEADLINE, || {
        worker.worker.outbox().blocked_pushes() == 1
    });
    let paused_at = sources.pages_started();
    let held = worker.worker.outbox().len();
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        sources.pages_started(),
        paused_at,
        "the source went on while the outbox was full"
    );
    assert_eq!(
        worker.worker.outbox().len(),
        held,
        "the full outbox took more"
    );
    assert!(worker.worker.outbox().bytes() <= 5 * 50 * 400);

    let controller = ControllerProcess::start(dirs.controller.path(), net);
    wait_until("everything arrives", DEADLINE, || {
        live(&controller) == 5_000
    });
    assert_exactly(&controller, 5_000);
    worker.shut_down().unwrap();
    controller.crash();
}

/// See the test of the same name.
pub fn a_worker_restarted_mid_run_resends_its_outbox_instead_of_refetching<N: Network>(net: &N) {
    let dirs = dirs();
    let controller = ControllerProcess::start(dirs.controller.path(), net);
    let worker = WorkerProcess::start(worker_config(&dirs), net, CountingSources::new());
    controller
        .block_on(
            controller
                .controller
                .start_stream(&stream(), CountingSources::config(2_000, 100, 0, 300)),
        )
        .unwrap();
    wait_until("the run is under way", DEADLINE, || {
        live(&controller) >= 100
    });
    // The controller goes; the worker fills its outbox; then the worker stops cleanly.
    controller.crash();
    wait_until("the outbox holds batches", DEADLINE, || {
        worker.worker.outbox().len() >= 3
    });
    worker.shut_down().unwrap();

    let controller = ControllerProcess::start(dirs.controller.path(), net);
    // What the outbox kept across the restart, and the newest cursor in it (records done).
    let kept = crate::outbox::Outbox::open(&worker_config(&dirs).outbox)
        .unwrap()
        .entries(0, 1_000)
        .unwrap();
    let earlier_runs: Vec<_> = controller
        .store
        .runs(&stream(), 100)
        .unwrap()
        .into_iter()
        .map(|run| run.id)
        .collect();
    let sources = CountingSources::new();
    let worker = WorkerProcess::start(worker_config(&dirs), net, sources.clone());
    assert!(
        kept.len() >= 3,
        "the outbox kept its batches across the restart"
    );
    let newest: u64 = kept
        .last()
        .unwrap()
        .batch
        .cursor
        .position()
        .unwrap()
        .unwrap();
    wait_until("everything arrives", DEADLINE, || {
        live(&controller) == 2_000
    });
    assert_exactly(&controller, 2_000);
    // The restarted worker's first run (a Start runs at once) begins once the outbox's batches
    // are acknowledged, so it may still be fetching when the last of them is committed: its
    // pages are counted once it has ended.
    wait_until("the restarted worker's first run ends", DEADLINE, || {
        controller
            .store
            .runs(&stream(), 100)
            .unwrap()
            .iter()
            .any(|run| !earlier_runs.contains(&run.id) && run.state != RunState::Running)
    });
    // The batches from the outbox were resent, not fetched again: the restarted worker fetched
    // exactly the pages past the newest of them. When the outbox held the run to its last batch,
    // that first run begins at the end and fetches one page, which finds nothing new.
    let expected = if kept.last().unwrap().batch.last {
        1
    } else {
        (2_000 - newest) / 100
    };
    assert_eq!(sources.pages_started() as u64, expected);
    worker.shut_down().unwrap();
    controller.crash();
}

/// See the test of the same name.
pub fn stop_is_idempotent_and_no_page_starts_after_it_returns<N: Network>(net: &N) {
    let dirs = dirs();
    let controller = ControllerProcess::start(dirs.controller.path(), net);
    let sources = CountingSources::new();
    let worker = WorkerProcess::start(worker_config(&dirs), net, sources.clone());
    controller
        .block_on(
            controller
                .controller
                .start_stream(&stream(), CountingSources::config(100_000, 50, 5, 300)),
        )
        .unwrap();
    wait_until("the run is under way", DEADLINE, || {
        live(&controller) >= 100
    });
    let status = controller
        .block_on(controller.controller.stop_stream(&stream()))
        .unwrap()
        .unwrap();
    assert_eq!(status.state, StreamState::Stopped);
    let pages = sources.pages_started();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        sources.pages_started(),
        pages,
        "a page started after stop returned"
    );
    let again = controller
        .block_on(controller.controller.stop_stream(&stream()))
        .unwrap()
        .unwrap();
    assert_eq!(again.state, StreamState::Stopped);
    // What was committed stays, consistent with its checkpoint.
    let ids: BTreeSet<u64> = stored_ids(&controller).into_iter().collect();
    assert_eq!(ids.len() as u64, live(&controller));
    assert!(controller
        .block_on(
            controller
                .controller
                .stop_stream(&StreamName::new("nope").unwrap())
        )
        .unwrap()
        .is_none());
    worker.shut_down().unwrap();
    controller.crash();
}

/// See the test of the same name.
pub fn restart_elsewhere_a_stream_whose_worker_goes_away_is_reassigned_and_completes<N: Network>(
    net: &N,
) {
    let dirs = dirs();
    let other_dir = tempfile::tempdir().unwrap();
    let controller = ControllerProcess::start(dirs.controller.path(), net);
    let first = WorkerProcess::start(worker_config(&dirs), net, CountingSources::new());
    wait_until("the first worker connects", DEADLINE, || {
        controller.controller.workers() == 1
    });
    controller
        .block_on(
            controller
                .controller
                .start_stream(&stream(), CountingSources::config(3_000, 50, 5, 300)),
        )
        .unwrap();
    wait_until("the run is under way", DEADLINE, || {
        live(&controller) >= 300
    });
    let second = WorkerProcess::start(
        WorkerConfig::new("worker-2", other_dir.path()),
        net,
        CountingSources::new(),
    );
    wait_until("the second worker connects", DEADLINE, || {
        controller.controller.workers() == 2
    });
    assert_eq!(
        controller
            .block_on(controller.controller.status(&stream()))
            .unwrap()
            .unwrap()
            .worker
            .as_deref(),
        Some("worker-1")
    );

    first.crash();
    wait_until("the stream moves to the other worker", DEADLINE, || {
        controller
            .block_on(controller.controller.status(&stream()))
            .unwrap()
            .unwrap()
            .worker
            .as_deref()
            == Some("worker-2")
    });
    wait_until("everything arrives", DEADLINE, || {
        live(&controller) == 3_000
    });
    assert_exactly(&controller, 3_000);
    second.shut_down().unwrap();
    controller.crash();
}

/// See the test of the same name.
pub fn deleting_a_stream_with_batches_in_flight_leaves_the_connection_and_the_other_streams<
    N: Network,
>(
    net: &N,
) {
    let dirs = dirs();
    let controller = ControllerProcess::start(dirs.controller.path(), net);
    let worker = WorkerProcess::start(worker_config(&dirs), net, CountingSources::new());
    let (doomed, kept) = (
        StreamName::new("doomed").unwrap(),
        StreamName::new("kept").unwrap(),
    );
    for (name, config) in [
        (&doomed, CountingSources::config(50_000, 10, 0, 300)),
        (&kept, CountingSources::config(3_000, 50, 2, 300)),
    ] {
        controller
            .block_on(controller.controller.start_stream(name, config))
            .unwrap();
    }
    wait_until("both streams are under way", DEADLINE, || {
        controller.store.counts(&doomed).unwrap().live >= 100
            && controller.store.counts(&kept).unwrap().live >= 50
    });
    // The controller goes away and the doomed stream's batches pile up in the outbox; it comes
    // back and deletes the stream before the worker is back: those batches are refused.
    let before = worker.worker.connections();
    controller.crash();
    wait_until("batches wait in the outbox", DEADLINE, || {
        worker.worker.outbox().len() >= 30
    });
    let controller = ControllerProcess::start(dirs.controller.path(), net);
    assert!(controller
        .block_on(controller.controller.delete_stream(&doomed))
        .unwrap());
    // Both sides have seen the new connection (the controller registers it before the worker's
    // connect returns).
    wait_until("the worker is back", DEADLINE, || {
        controller.controller.workers() == 1 && worker.worker.connections() > before
    });
    let connections = worker.worker.connections();

    wait_until("the kept stream completes", DEADLINE, || {
        controller.store.counts(&kept).unwrap().live == 3_000
    });
    wait_until("the doomed stream's batches are gone", DEADLINE, || {
        worker.worker.outbox().is_empty()
    });
    assert_eq!(
        worker.worker.connections(),
        connections,
        "the refusals of the deleted stream's batches did not cost the connection"
    );
    assert_eq!(
        controller.store.counts(&doomed).unwrap(),
        crate::store::Counts::default(),
        "nothing of the deleted stream was committed after its deletion"
    );
    let status = controller
        .block_on(controller.controller.status(&kept))
        .unwrap()
        .unwrap();
    assert_eq!(status.worker.as_deref(), Some("worker-1"));
    worker.shut_down().unwrap();
    controller.crash();
}

/// See the test of the same name.
pub fn a_source_sees_the_store_through_its_inventory_and_a_resync_reads_everything_again<
    N: Network,
>(
    net: &N,
) {
    let dirs = dirs();
    let controller = ControllerProcess::start(dirs.controller.path(), net);
    let sources = CountingSources::new();
    let worker = WorkerProcess::start(worker_config(&dirs), net, sources.clone());
    let config = CountingSources::config(500, 100, 0, 1);
    controller
        .block_on(controller.controller.start_stream(&stream(), config))
        .unwrap();
    wait_until("the first run succeeds", DEADLINE, || {
        last_run_state(&controller) == Some(RunState::Succeeded)
    });
    // A later run reads the controller's store through its inventory, over the transport.
    wait_until("a run sees every stored record", DEADLINE, || {
        sources.held_at_starts().contains(&500)
    });
    assert_eq!(
        sources.held_at_starts()[0],
        0,
        "the first run saw an empty store"
    );

    let newest = controller.store.runs(&stream(), 1).unwrap()[0].id;
    controller
        .block_on(controller.controller.resync_stream(&stream()))
        .unwrap()
        .expect("the stream exists");
    wait_until(
        "a run after the resync reads everything again",
        DEADLINE,
        || {
            controller
                .store
                .runs(&stream(), 20)
                .unwrap()
                .iter()
                .any(|run| {
                    run.id > newest && run.state == RunState::Succeeded && run.records == 500
                })
        },
    );
    assert_exactly(&controller, 500);
    worker.shut_down().unwrap();
    controller.crash();
}

/// Every runtime flow above as a `#[test]` over the network `$network` builds: the one list a
/// transport's test file names, so a new flow runs on every transport at once.
///
/// ```ignore
/// weld_pipeline::runtime_flows!(MemoryTransport::new());
/// ```
#[macro_export]
macro_rules! runtime_flows {
    ($network:expr) => {
        $crate::runtime_flows!(@each $network;
            a_started_stream_is_delivered_complete_and_once_with_its_run_recorded,
            a_stream_waits_pending_until_a_worker_connects_in_either_order,
            restart_of_both_sides_mid_run_loses_nothing_and_duplicates_nothing,
            outbox_backpressure_pauses_the_source_while_the_controller_is_away_and_nothing_is_dropped,
            a_worker_restarted_mid_run_resends_its_outbox_instead_of_refetching,
            stop_is_idempotent_and_no_page_starts_after_it_returns,
            restart_elsewhere_a_stream_whose_worker_goes_away_is_reassigned_and_completes,
            deleting_a_stream_with_batches_in_flight_leaves_the_connection_and_the_other_streams,
            a_source_sees_the_store_through_its_inventory_and_a_resync_reads_everything_again,
        );
    };
    (@each $network:expr; $($flow:ident),* $(,)?) => {$(
        #[test]
        fn $flow() {
            $crate::testing::flows::$flow(&$network);
        }
    )*};
}
