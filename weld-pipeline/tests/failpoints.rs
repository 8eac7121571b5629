//! A crash at each boundary where a careless design loses data, then a restart: every
//! acknowledged batch is in the store exactly once, and the outbox drains.
//!
//! Failpoints are process-wide, so this file is its own test binary and its tests run one at a
//! time (`FailScenario` holds a lock).

use std::time::Duration;

use weld_pipeline::runtime::WorkerConfig;
use weld_pipeline::store::{Archived, RunState};
use weld_pipeline::testing::{
    counter_value, global_counters, wait_until, ControllerProcess, GeneratorSources, WorkerProcess,
};
use weld_pipeline::transport::MemoryTransport;
use weld_pipeline::StreamName;

const DEADLINE: Duration = Duration::from_secs(60);
const RECORDS: u64 = 1_000;

fn stream() -> StreamName {
    StreamName::new("contacts").unwrap()
}

fn live(controller: &ControllerProcess) -> u64 {
    controller
        .controller
        .store()
        .counts(&stream())
        .unwrap()
        .live
}

fn assert_exactly_once(controller: &ControllerProcess) {
    let store = controller.controller.store();
    let mut ids = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = store
            .records(&stream(), after.as_deref(), 300, Archived::All)
            .unwrap();
        ids.extend(page.records.iter().map(|r| r.id.parse::<u64>().unwrap()));
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    assert_eq!(
        ids,
        (1..=RECORDS).collect::<Vec<_>>(),
        "every record exactly once"
    );
    assert_eq!(live(controller), RECORDS);
}

/// What shows that a failpoint fired: a counter that must grow by at least `at_least`.
struct Evidence {
    counter: &'static str,
    labels: &'static [(&'static str, &'static str)],
    at_least: u64,
}

const COMMIT_FAILED: &[(&str, &str)] = &[("stream", "contacts")];
const REPLAYED: &[(&str, &str)] = &[("stream", "contacts")];
const RUN_FAILED: &[(&str, &str)] = &[("stream", "contacts"), ("outcome", "failed")];

/// Runs a stream to completion with `failpoint` set to `actions`, crashes both sides, reopens
/// them, and checks conservation, uniqueness and liveness, and that the failpoint did fire.
fn survives(failpoint: &str, actions: &str, evidence: Evidence) {
    let scenario = fail::FailScenario::setup();
    let count = || counter_value(&global_counters(), evidence.counter, evidence.labels);
    let before = count();
    let controller_dir = tempfile::tempdir().unwrap();
    let worker_dir = tempfile::tempdir().unwrap();
    let transport = MemoryTransport::new();
    let config = || WorkerConfig::new("worker-1", worker_dir.path());

    let controller = ControllerProcess::start(controller_dir.path(), &transport);
    // A short interval: a run that failed at the failpoint is followed by another soon.
    let stream_config = GeneratorSources::config(RECORDS, 50, 1, 1);
    controller
        .block_on(controller.controller.start_stream(&stream(), stream_config))
        .unwrap();
    fail::cfg(failpoint, actions).unwrap();
    let worker = WorkerProcess::start(config(), &transport, GeneratorSources::new());
    wait_until(
        &format!("all records arrive despite {failpoint}"),
        DEADLINE,
        || live(&controller) == RECORDS,
    );
    fail::remove(failpoint);
    let fired = count() - before;
    assert!(
        fired >= evidence.at_least,
        "{failpoint} left {fired} {} behind, expected at least {}",
        evidence.counter,
        evidence.at_least
    );

    worker.crash();
    controller.crash();
    let controller = ControllerProcess::start(controller_dir.path(), &transport);
    assert_exactly_once(&controller);
    let worker = WorkerProcess::start(config(), &transport, GeneratorSources::new());
    wait_until("the outbox drains after the restart", DEADLINE, || {
        worker.worker.outbox().is_empty()
    });
    wait_until("a run succeeds after the restart", DEADLINE, || {
        let runs = controller.controller.store().runs(&stream(), 5).unwrap();
        runs.iter().any(|r| r.state == RunState::Succeeded)
    });
    assert_exactly_once(&controller);
    worker.shut_down().unwrap();
    controller.crash();
    scenario.teardown();
}

#[test]
fn a_crash_before_the_store_write_loses_nothing_acked() {
    survives(
        "store::before_write",
        "3*return",
        Evidence {
            counter: "weld_commit_errors_total",
            labels: COMMIT_FAILED,
            at_least: 3,
        },
    );
}

#[test]
fn a_crash_between_the_store_write_and_its_sync_is_redelivered_and_stored_once() {
    survives(
        "store::between_write_and_sync",
        "3*return",
        Evidence {
            counter: "weld_batches_replayed_total",
            labels: REPLAYED,
            at_least: 1,
        },
    );
}

#[test]
fn a_crash_between_flush_and_fdatasync_acknowledges_nothing_undurable() {
    survives(
        "store::between_flush_and_fdatasync",
        "2*return",
        Evidence {
            counter: "weld_commit_errors_total",
            labels: COMMIT_FAILED,
            at_least: 2,
        },
    );
}

#[test]
fn a_lost_ack_between_commit_and_ack_is_a_redelivery_stored_once() {
    survives(
        "controller::between_commit_and_ack",
        "4*return",
        Evidence {
            counter: "weld_batches_replayed_total",
            labels: REPLAYED,
            at_least: 1,
        },
    );
}

#[test]
fn a_crash_between_the_ack_and_the_outbox_removal_is_resent_and_replayed() {
    survives(
        "worker::between_ack_and_outbox_removal",
        "4*return",
        Evidence {
            counter: "weld_batches_replayed_total",
            labels: REPLAYED,
            at_least: 1,
        },
    );
}

#[test]
fn a_crash_in_the_middle_of_an_outbox_write_refetches_from_the_checkpoint() {
    survives(
        "outbox::in_the_middle_of_a_write",
        "2*return",
        Evidence {
            counter: "weld_runs_finished_total",
            labels: RUN_FAILED,
            at_least: 1,
        },
    );
}
