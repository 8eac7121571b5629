//! A real process running the store, killed with SIGKILL at seeded random moments, over and
//! over: after every kill, every acknowledged batch is in the store, each record exactly once,
//! and the checkpoint sits on the last batch with no gap before it; across the cycles the store
//! keeps making progress.
//!
//! The child is this test binary run again with `crash_loop_child` and a data directory in
//! `WELD_CRASH_LOOP_DIR`: it commits batches, four at a time, and prints `ACK <seq>` once each
//! commit returned, which is when a controller would acknowledge.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use weld_pipeline::store::{Archived, SledStore, SledStoreConfig};
use weld_pipeline::{Batch, Checkpoint, Json, Record, RunId, Sink, StreamName, Timestamp};

const CHILD_DIR: &str = "WELD_CRASH_LOOP_DIR";
const PER_BATCH: u64 = 50;
const CYCLES: usize = 120;
const SEED: u64 = 0x5eed_c0ff;

fn stream() -> StreamName {
    StreamName::new("contacts").unwrap()
}

/// Batch `seq` of the one long run: records `seq * 50 + 1 ..= seq * 50 + 50`, always the same.
fn batch(seq: u64) -> Batch {
    let records = (seq * PER_BATCH + 1..=(seq + 1) * PER_BATCH)
        .map(|id| {
            let data = format!(r#"{{"id":"{id}","properties":{{"email":"c{id}@example.com"}}}}"#);
            Record::new(
                id.to_string(),
                Timestamp::from_millis(1),
                Json::parse(data.into_bytes()).unwrap(),
            )
        })
        .collect();
    Batch::new(stream(), RunId(1), seq)
        .with_records(records)
        .with_cursor(Checkpoint::from_position(&((seq + 1) * PER_BATCH)).unwrap())
}

/// The child: commit from the checkpoint on, forever, printing each ack. Ignored in a plain
/// run (it would prove nothing there); the crash loop runs it with `--ignored`.
#[test]
#[ignore = "the crash loop's child process: run by store_survives_a_sigkill_crash_loop_with_every_acked_batch_once"]
fn crash_loop_child() {
    let dir = std::env::var(CHILD_DIR).expect("run by the crash loop, which names the directory");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let store = SledStore::open(&SledStoreConfig::new(&dir)).unwrap();
        let done: u64 = store
            .checkpoint(&stream())
            .unwrap()
            .position()
            .unwrap()
            .unwrap_or(0);
        let mut seq = done / PER_BATCH;
        println!("READY");
        let mut out = std::io::stdout();
        out.flush().unwrap();
        loop {
            // Four in flight: their syncs are shared, and a kill can land between any of them.
            let commits = (seq..seq + 4).map(|s| {
                let store = store.clone();
                async move { (s, store.commit(&batch(s)).await) }
            });
            for (s, result) in futures::future::join_all(commits).await {
                result.unwrap();
                writeln!(out, "ACK {s}").unwrap();
            }
            out.flush().unwrap();
            seq += 4;
        }
    });
}

/// Checks the invariants on the store left by a killed child.
fn check(dir: &std::path::Path, acked: &BTreeSet<u64>, cycle: usize) -> u64 {
    let store = SledStore::open(&SledStoreConfig::new(dir)).unwrap();
    for &seq in acked {
        assert!(
            store.is_committed(&stream(), RunId(1), seq).unwrap(),
            "cycle {cycle}: acked batch {seq} was lost"
        );
    }
    let top = acked.iter().next_back().copied().unwrap_or(0) + 64;
    let committed: Vec<u64> = (0..top)
        .filter(|&s| store.is_committed(&stream(), RunId(1), s).unwrap())
        .collect();
    let expected: BTreeSet<u64> = committed
        .iter()
        .flat_map(|&s| s * PER_BATCH + 1..=(s + 1) * PER_BATCH)
        .collect();

    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = store
            .records(&stream(), after.as_deref(), 1_000, Archived::All)
            .unwrap();
        seen.extend(page.records.iter().map(|r| r.id.parse::<u64>().unwrap()));
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    let unique: BTreeSet<u64> = seen.iter().copied().collect();
    assert_eq!(
        unique.len(),
        seen.len(),
        "cycle {cycle}: a record appears twice"
    );
    assert_eq!(
        unique, expected,
        "cycle {cycle}: stored records are not those of the committed batches"
    );
    assert_eq!(
        store.counts(&stream()).unwrap().live,
        expected.len() as u64,
        "cycle {cycle}: live count"
    );

    let contiguous = committed
        .iter()
        .enumerate()
        .take_while(|(i, s)| *i as u64 == **s)
        .count() as u64;
    let checkpoint: u64 = store
        .checkpoint(&stream())
        .unwrap()
        .position()
        .unwrap()
        .unwrap_or(0);
    assert_eq!(
        checkpoint,
        contiguous * PER_BATCH,
        "cycle {cycle}: checkpoint not on the last contiguous batch"
    );
    contiguous
}

/// A child process killed when dropped.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn store_survives_a_sigkill_crash_loop_with_every_acked_batch_once() {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut rng = fastrand::Rng::with_seed(SEED);
    let mut acked = BTreeSet::new();
    let started = Instant::now();
    let mut progress = Vec::new();
    for cycle in 0..CYCLES {
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "the crash loop ran out of time at cycle {cycle}"
        );
        let child = Command::new(&exe)
            .args([
                "crash_loop_child",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_DIR, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Killed however this cycle ends, a failed assertion included.
        let mut child = KillOnDrop(child);
        let stdout = child.0.stdout.take().unwrap();
        let (lines, received) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if lines.send(line).is_err() {
                    break;
                }
            }
        });
        // Kill after a seeded number of acks and a seeded few more microseconds, so that the
        // kill lands anywhere in a commit (before the write, between write and sync, before
        // the ack is printed) and every cycle makes progress whatever the disk's speed.
        let acks_before_kill = rng.usize(1..=8);
        let mut acks = 0;
        while acks < acks_before_kill {
            let line = received
                .recv_timeout(Duration::from_secs(30))
                .expect("the child commits");
            if let Some((_, seq)) = line.split_once("ACK ") {
                acked.insert(seq.trim().parse::<u64>().unwrap());
                acks += 1;
            }
        }
        std::thread::sleep(Duration::from_micros(rng.u64(0..3_000)));
        child.0.kill().unwrap(); // SIGKILL
        child.0.wait().unwrap();
        reader.join().unwrap();
        for line in received.try_iter() {
            if let Some((_, seq)) = line.split_once("ACK ") {
                acked.insert(seq.trim().parse::<u64>().unwrap());
            }
        }
        progress.push(check(dir.path(), &acked, cycle));
    }
    // Liveness: the store kept moving forward across the kills.
    assert!(
        acked.len() >= CYCLES,
        "only {} batches acknowledged in {CYCLES} cycles",
        acked.len()
    );
    assert!(
        progress.windows(2).all(|w| w[1] >= w[0]),
        "the checkpoint went backwards"
    );
    eprintln!(
        "crash loop: {CYCLES} SIGKILLs, {} batches acknowledged, checkpoint at batch {}",
        acked.len(),
        progress.last().unwrap()
    );
}
