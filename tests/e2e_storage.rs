//! End to end, storage that fails and heals: data-streams' data directory on a small tmpfs the
//! test mounts, filled by a sync, then given room again. `/health` turns degraded with the
//! reason, the stream's status says it, and once there is room the store heals without a
//! restart and equals the fake exactly. Needs root to mount; elsewhere it says so and skips,
//! unless `WELD_REQUIRE_TMPFS=1` (set by CI, which runs as root).

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use reqwest::StatusCode;
use support::*;

/// A tmpfs mounted by the test, unmounted when dropped (after the processes using it).
struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    /// Mounts `size` (`4m`) at `path`; `None`, said loudly, when this machine cannot.
    fn mount(path: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(path).unwrap();
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .status()
            .is_ok_and(|s| s.success());
        if mounted {
            return Some(Tmpfs {
                path: path.to_owned(),
            });
        }
        assert!(
            std::env::var("WELD_REQUIRE_TMPFS").as_deref() != Ok("1"),
            "WELD_REQUIRE_TMPFS=1 but a tmpfs cannot be mounted here (not root?)"
        );
        eprintln!("SKIPPED: cannot mount a tmpfs here (not root?); the disk-full test did not run");
        None
    }

    /// Gives it `size` in all, in place: what it holds stays.
    fn resize(&self, size: &str) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.path)
            .status()
            .expect("mount runs");
        assert!(status.success(), "the tmpfs could not be resized");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// data-streams started with `opts`, a worker with its outbox in `worker_dir`, and the contacts
/// stream of `fake` started.
async fn contacts_syncing(
    fake: &Fake,
    opts: DataStreamsOpts,
    worker_dir: &Path,
) -> (DataStreams, Worker, Api) {
    let data_streams = start_data_streams(opts).await;
    let worker = start_worker(WorkerOpts::new(
        &data_streams.transport_addr,
        &fake.url,
        worker_dir,
    ))
    .await;
    let api = data_streams.api();
    api.wait_workers(1).await;
    api.start_stream(STREAM, contacts_stream(300)).await;
    (data_streams, worker, api)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_degrades_health_then_heals_by_itself_and_the_store_equals_the_source() {
    let dirs = [temp_dir(), temp_dir()];
    let Some(disk) = Tmpfs::mount(&dirs[0].path().join("data"), "3m") else {
        return;
    };
    let fake = start_fake(20_000, &[]).await;
    let (mut data_streams, worker, api) =
        contacts_syncing(&fake, DataStreamsOpts::new(&disk.path), dirs[1].path()).await;

    // The disk fills: health turns degraded with the reason, and the stream says why.
    let degraded = wait_for("storage to fail", CONVERGE_WITHIN, || async {
        let (status, body) = api.get("/health").await;
        (status == StatusCode::SERVICE_UNAVAILABLE).then_some(body)
    })
    .await;
    assert_eq!(degraded["status"], "degraded", "{degraded}");
    let why = degraded["storage"].as_str().unwrap_or_default().to_owned();
    assert!(why.contains("No space left on device"), "{degraded}");
    // The stream's status says why: in its last error while the failed handle can still read,
    // or in the error that answers the read when sled refuses reads too.
    let (code, status) = api.get(&format!("/streams/{STREAM}")).await;
    let said = match code {
        StatusCode::OK => status["last_error"]["message"].clone(),
        _ => status["error"]["message"].clone(),
    };
    assert!(
        said.as_str()
            .unwrap_or_default()
            .contains("No space left on device"),
        "{code}: {status}"
    );
    let logged = data_streams
        .process
        .lines_logged_during(Duration::from_secs(10))
        .await;
    eprintln!(
        "data-streams logged {} lines in 10 s of a full disk",
        logged.len()
    );
    assert!(
        logged.len() <= 30,
        "a failure is told once, not once per retry: {} log lines in 10 s:\n{}",
        logged.len(),
        logged.join("\n")
    );

    // Room again: it heals by itself, no restart, and nothing is missing or doubled.
    disk.resize("512m");
    // Until its next attempt reopens it, the failed handle may refuse reads too.
    let health = wait_for("storage to heal", CONVERGE_WITHIN, || async {
        let (status, health) = api.get("/health").await;
        (status == StatusCode::OK).then_some(health)
    })
    .await;
    assert_eq!(health["storage"], "ok", "{health}");
    let expected = fake.contacts().await;
    wait_synced(&api, STREAM, &expected).await;
    assert!(
        api.status(STREAM).await["last_error"].is_null() || {
            // The stream's own last error may be a run's; the storage one is gone.
            !api.status(STREAM).await["last_error"]["message"]
                .as_str()
                .unwrap_or_default()
                .contains("storage is failing")
        }
    );
    assert!(
        data_streams.process.is_running(),
        "healed without a restart"
    );
    drop(worker);
    data_streams.process.kill9();
    drop(data_streams);
    drop(disk);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_out_of_descriptors_fails_the_store_and_it_heals_once_they_are_back() {
    let dirs = [temp_dir(), temp_dir()];
    let fake = start_fake(20_000, &[]).await;
    let opts = DataStreamsOpts {
        max_open_files: Some(128),
        ..DataStreamsOpts::new(dirs[0].path())
    };
    let (mut data_streams, worker, api) = contacts_syncing(&fake, opts, dirs[1].path()).await;
    wait_until("the sync is under way", CONVERGE_WITHIN, || async {
        api.status(STREAM).await["records"].as_u64() > Some(0)
    })
    .await;

    // The descriptor table runs out under the store: the process's limit is cut below every
    // descriptor it may open next (a new one takes the lowest free number, and 0 to 2 are its
    // standard streams), so the store's next sync cannot open what it needs. (Idle connections
    // on the API no longer can do this: its places are capped under the limit, see
    // e2e_attacks.)
    let pid = data_streams.process.pid();
    let set_limit = |files: usize| {
        let status = std::process::Command::new("prlimit")
            .arg(format!("--pid={pid}"))
            // The soft limit only: the hard one stays, and raising it again needs a privilege
            // a container may lack.
            .arg(format!("--nofile={files}:"))
            .status()
            .expect("prlimit runs");
        assert!(status.success(), "prlimit --nofile={files}");
    };
    set_limit(3);
    wait_until(
        "the store fails for want of descriptors",
        CONVERGE_WITHIN,
        || {
            let logs = data_streams.process.logs();
            async move { logs.contains("storage failed") }
        },
    )
    .await;
    // Told once, not once per failed accept or retry, while the descriptors are out.
    let logged = data_streams
        .process
        .lines_logged_during(Duration::from_secs(10))
        .await;
    eprintln!(
        "data-streams logged {} lines in 10 s without descriptors",
        logged.len()
    );
    assert!(
        logged.len() <= 30,
        "out of descriptors: {} log lines in 10 s:\n{}",
        logged.len(),
        logged.join("\n")
    );
    // The descriptors are back.
    set_limit(128);

    wait_until("storage to heal", CONVERGE_WITHIN, || async {
        api.get("/health").await.0 == StatusCode::OK
    })
    .await;
    let expected = fake.contacts().await;
    wait_synced(&api, STREAM, &expected).await;
    let logs = data_streams.process.logs();
    assert!(logs.contains("storage healed"), "{logs}");
    let (status, health) = api.get("/health").await;
    assert_eq!(status, StatusCode::OK, "{health}");
    assert!(
        data_streams.process.is_running(),
        "healed without a restart"
    );
    drop(worker);
    data_streams.process.kill9();
}

/// The outbox writes to disk what waits for its ack longer than a second: data-streams goes
/// away in the middle of a sync, what the worker fetches meanwhile fills its small disk, and
/// the source pauses (told once) instead of failing. Room again and data-streams back, the sync
/// completes, the worker never restarted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_outbox_disk_pauses_the_source_and_the_sync_completes_once_there_is_room() {
    let dirs = [temp_dir(), temp_dir()];
    let Some(disk) = Tmpfs::mount(&dirs[1].path().join("outbox"), "2m") else {
        return;
    };
    let fake = start_fake(20_000, &[]).await;
    let (mut data_streams, mut worker, api) =
        contacts_syncing(&fake, DataStreamsOpts::new(dirs[0].path()), &disk.path).await;
    wait_for("a run under way", CONVERGE_WITHIN, || async {
        let records = api.status(STREAM).await["records"].as_u64()?;
        (records > 0).then_some(records)
    })
    .await;
    data_streams.process.kill9();

    wait_until("the outbox cannot write", CONVERGE_WITHIN, || {
        let logs = worker.process.logs();
        async move { logs.contains("the outbox cannot write") }
    })
    .await;
    let logged = worker
        .process
        .lines_logged_during(Duration::from_secs(10))
        .await;
    eprintln!(
        "the worker logged {} lines in 10 s of a full outbox disk",
        logged.len()
    );
    assert!(
        logged.len() <= 30,
        "a full outbox disk is told once: {} lines in 10 s:\n{}",
        logged.len(),
        logged.join("\n")
    );

    disk.resize("512m");
    let data_streams = start_data_streams(data_streams.restart_opts()).await;
    let expected = fake.contacts().await;
    wait_synced(&api, STREAM, &expected).await;
    assert!(worker.process.logs().contains("the outbox writes again"));
    assert!(worker.process.is_running(), "healed without a restart");
    let runs = api.runs(STREAM).await;
    assert_eq!(
        runs[0]["state"], "succeeded",
        "the first run went on: {runs:?}"
    );
    worker.process.kill9();
    drop(worker);
    drop(data_streams);
    drop(disk);
}
