//! Through a fault proxy that delays, drops or cuts the ack direction, batches are resent and
//! stored exactly once.

mod support;

use std::time::Duration;

use support::{quick_config, Fault, FaultProxy, TcpNetwork};
use weld_pipeline::runtime::WorkerConfig;
use weld_pipeline::testing::{
    counter_value, global_counters, stored_ids, wait_until, ControllerProcess, CountingSources,
    WorkerProcess,
};
use weld_pipeline::StreamName;

const RECORDS: u64 = 4_000;

#[test]
fn acks_delayed_dropped_or_cut_are_resent_and_stored_exactly_once() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "off".into()))
        .with_test_writer()
        .try_init();
    let replayed = || counter_value(&global_counters(), "weld_batches_replayed_total", &[]);
    let before = replayed();
    let controller_dir = tempfile::tempdir().unwrap();
    let worker_dir = tempfile::tempdir().unwrap();
    let mut network = TcpNetwork::new(quick_config());
    let controller = ControllerProcess::start(controller_dir.path(), &network);

    let proxy_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let upstream = network.controller.local_addr().unwrap();
    let proxy = proxy_runtime.block_on(FaultProxy::start(upstream));
    network.via = Some(proxy.addr);

    let worker = WorkerProcess::start(
        WorkerConfig::new("worker-1", worker_dir.path()),
        &network,
        CountingSources::new(),
    );
    let stream = StreamName::new("contacts").unwrap();
    controller
        .block_on(
            controller
                .controller
                .start_stream(&stream, CountingSources::config(RECORDS, 50, 10, 300)),
        )
        .unwrap();
    let live = || controller.store.counts(&stream).unwrap().live;

    // Each fault strikes once the run has reached a point, so every one lands mid-run however
    // fast the machine is.
    let faults = [
        (400, Fault::Delay, 0),
        (900, Fault::Cut, 700),
        (1_500, Fault::Drop, 0),
        (2_100, Fault::Cut, 5_000),
        (2_700, Fault::Delay, 0),
        (3_200, Fault::Drop, 0),
    ];
    for (reached, fault, cut_after) in faults {
        wait_until(
            &format!("{reached} records stored"),
            Duration::from_secs(60),
            || live() >= reached,
        );
        proxy.set(fault, cut_after);
        std::thread::sleep(Duration::from_millis(300));
        proxy.set(Fault::None, 0);
    }

    wait_until(
        "every record arrives through the faults",
        Duration::from_secs(60),
        || live() == RECORDS,
    );
    wait_until("the outbox drains", Duration::from_secs(60), || {
        worker.worker.outbox().is_empty()
    });
    let ids = stored_ids(&controller.store, &stream);
    assert_eq!(
        ids,
        (1..=RECORDS).collect::<Vec<_>>(),
        "every record exactly once"
    );
    assert!(
        replayed() > before,
        "lost acks were redelivered and recognised as replays"
    );
    worker.shut_down().unwrap();
    controller.crash();
    proxy_runtime.shutdown_timeout(Duration::from_secs(5));
}
