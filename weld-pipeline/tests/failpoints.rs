//! A crash at each boundary where a careless design loses data, then a restart: every record
//! arrives, each exactly once, and the outbox drains.
//!
//! Each test runs the controller and the worker in a child process (this test binary run again
//! as `failpoint_child`) whose failpoint aborts the process the third time it is reached: a real
//! crash at exactly that boundary, with nothing flushed on the way out. The parent then reopens
//! both from their directories and checks conservation, uniqueness and liveness.
//!
//! Failpoints are process-wide: the in-process group-commit test pauses one, so every test here
//! holds `FailScenario`'s lock and they run one at a time.

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use weld_pipeline::runtime::WorkerConfig;
use weld_pipeline::store::{RunState, SledStore, SledStoreConfig};
use weld_pipeline::testing::{
    stored_ids, wait_until, ControllerProcess, CountingSources, WorkerProcess,
};
use weld_pipeline::transport::MemoryTransport;
use weld_pipeline::{Batch, Checkpoint, Json, Record, RunId, Sink, StreamName, Timestamp};

const DEADLINE: Duration = Duration::from_secs(60);
const RECORDS: u64 = 1_000;
const FAILPOINT: &str = "WELD_FAILPOINT";
const CONTROLLER_DIR: &str = "WELD_CONTROLLER_DIR";
const WORKER_DIR: &str = "WELD_WORKER_DIR";
/// The failpoint inside an outbox's write to disk.
const WRITING_THE_OUTBOX: &str = "outbox::in_the_middle_of_a_write";
/// The failpoint between a batch's ack and its removal from the outbox.
const BETWEEN_ACK_AND_REMOVAL: &str = "worker::between_ack_and_outbox_removal";
/// The child aborts the third time its failpoint is reached: some batches got through first.
const CRASH_ON_HIT: usize = 3;

fn stream() -> StreamName {
    StreamName::new("contacts").unwrap()
}

fn live(controller: &ControllerProcess<MemoryTransport>) -> u64 {
    controller.store.counts(&stream()).unwrap().live
}

fn worker_config(dir: &Path) -> WorkerConfig {
    WorkerConfig::new("worker-1", dir)
}

/// The child: runs a stream until its failpoint aborts the process.
///
/// Ignored in a plain run (it would prove nothing there); each test here runs it with
/// `--ignored`.
#[test]
#[ignore = "the failpoint tests' child process: run by each of them"]
fn failpoint_child() {
    let failpoint = std::env::var(FAILPOINT).expect("run by a failpoint test, which names it");
    let controller_dir = std::env::var(CONTROLLER_DIR).unwrap();
    let worker_dir = std::env::var(WORKER_DIR).unwrap();
    static HITS: AtomicUsize = AtomicUsize::new(0);
    fail::cfg_callback(&failpoint, || {
        if HITS.fetch_add(1, Ordering::SeqCst) + 1 == CRASH_ON_HIT {
            std::process::abort();
        }
    })
    .unwrap();
    let transport = MemoryTransport::new();
    let controller = ControllerProcess::start(Path::new(&controller_dir), &transport);
    let mut config = worker_config(Path::new(&worker_dir));
    if [WRITING_THE_OUTBOX, BETWEEN_ACK_AND_REMOVAL].contains(&failpoint.as_str()) {
        // Each batch written as it is pushed: the writes come while the run goes on, and an
        // acknowledged batch is on disk when the crash comes, to be resent and replayed.
        config.outbox.write_after = Duration::ZERO;
    }
    let worker = WorkerProcess::start(config, &transport, CountingSources::new());
    // A short interval: if the crash comes late, new runs keep reaching the failpoint.
    let config = CountingSources::config(RECORDS, 50, 1, 1);
    controller
        .block_on(controller.controller.start_stream(&stream(), config))
        .unwrap();
    std::thread::sleep(DEADLINE);
    drop(worker);
    panic!("{failpoint} was not reached {CRASH_ON_HIT} times");
}

/// Crashes a child at `failpoint`, then restarts both sides here and checks that everything
/// arrives exactly once and the outbox drains.
fn survives_a_crash_at(failpoint: &str) {
    let scenario = fail::FailScenario::setup();
    let controller_dir = tempfile::tempdir().unwrap();
    let worker_dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "failpoint_child",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(FAILPOINT, failpoint)
        .env(CONTROLLER_DIR, controller_dir.path())
        .env(WORKER_DIR, worker_dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > DEADLINE * 2 {
            let _ = child.kill();
            panic!("the child did not crash at {failpoint}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(
        status.signal(),
        Some(6),
        "the child must die by abort at {failpoint}, not {status}"
    );

    let transport = MemoryTransport::new();
    let controller = ControllerProcess::start(controller_dir.path(), &transport);
    let crashed_with = live(&controller);
    assert!(
        crashed_with < RECORDS,
        "the crash came after the run was done ({crashed_with} records)"
    );
    let worker = WorkerProcess::start(
        worker_config(worker_dir.path()),
        &transport,
        CountingSources::new(),
    );
    wait_until(
        &format!("all records arrive after a crash at {failpoint}"),
        DEADLINE,
        || live(&controller) == RECORDS,
    );
    wait_until("the outbox drains", DEADLINE, || {
        worker.worker.outbox().is_empty()
    });
    wait_until("a run succeeds", DEADLINE, || {
        let runs = controller.store.runs(&stream(), 5).unwrap();
        runs.iter().any(|r| r.state == RunState::Succeeded)
    });

    let ids = stored_ids(&controller.store, &stream());
    assert_eq!(
        ids,
        (1..=RECORDS).collect::<Vec<_>>(),
        "every record exactly once"
    );
    worker.shut_down().unwrap();
    controller.crash();
    scenario.teardown();
}

#[test]
fn a_crash_before_the_store_write_loses_nothing_acked() {
    survives_a_crash_at("store::before_write");
}

#[test]
fn a_crash_between_the_store_write_and_its_sync_is_redelivered_and_stored_once() {
    survives_a_crash_at("store::between_write_and_sync");
}

#[test]
fn a_crash_between_flush_and_fdatasync_is_redelivered_and_stored_once() {
    survives_a_crash_at("store::between_flush_and_fdatasync");
}

#[test]
fn a_crash_between_commit_and_ack_is_a_redelivery_stored_once() {
    survives_a_crash_at("controller::between_commit_and_ack");
}

#[test]
fn a_crash_between_the_ack_and_the_outbox_removal_is_resent_and_replayed() {
    survives_a_crash_at(BETWEEN_ACK_AND_REMOVAL);
}

#[test]
fn a_crash_in_the_middle_of_an_outbox_write_refetches_from_the_checkpoint() {
    survives_a_crash_at(WRITING_THE_OUTBOX);
}

#[test]
fn a_crash_with_batches_held_in_memory_only_refetches_them_from_the_checkpoint() {
    survives_a_crash_at("outbox::holding_a_batch_in_memory_only");
}

/// While a sync round is held inside its fdatasync, 63 more commits arrive: they all share the
/// next round. Two rounds for 64 commits, exactly.
#[test]
fn group_commit_shares_one_sync_round_among_waiting_commits() {
    let scenario = fail::FailScenario::setup();
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let store = SledStore::open(&SledStoreConfig::new(dir.path())).unwrap();
    fail::cfg("store::between_flush_and_fdatasync", "pause").unwrap();
    let commits: Vec<_> = (0..64u64)
        .map(|seq| {
            let store = store.clone();
            let batch = Batch::new(stream(), RunId(1), seq)
                .with_records(vec![Record::new(
                    (seq + 1).to_string(),
                    Timestamp::from_millis(1),
                    Json::parse(format!("{{\"n\":{seq}}}").into_bytes()).unwrap(),
                )])
                .with_cursor(Checkpoint::from_bytes(seq.to_string()));
            runtime.spawn(async move { store.commit(&batch).await })
        })
        .collect();
    wait_until("every commit waits for a sync", DEADLINE, || {
        store.sync_requests() == 64
    });
    assert_eq!(store.sync_rounds(), 1, "one round, held in its fdatasync");
    fail::remove("store::between_flush_and_fdatasync");
    for commit in commits {
        runtime.block_on(commit).unwrap().unwrap();
    }
    assert_eq!(
        store.sync_rounds(),
        2,
        "the 63 waiting commits shared one round"
    );
    assert_eq!(store.counts(&stream()).unwrap().live, 64);
    drop(store);
    runtime.shutdown_timeout(Duration::from_secs(10));
    scenario.teardown();
}
