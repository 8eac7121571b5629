//! End to end, the one-command demo: `quickstart` syncs, shows stored records, serves until
//! Ctrl-C, and then exits cleanly.

mod support;

use std::time::Duration;

use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quickstart_shows_stored_records_and_exits_cleanly_on_ctrl_c() {
    // Its own working directory: whatever it writes there goes with the test.
    let dir = temp_dir();
    let mut quickstart = Process::spawn_in("quickstart", &[], Some(dir.path()));

    quickstart
        .wait_line("the stored records", Duration::from_secs(120), |line| {
            line.contains("stored records")
        })
        .await;
    quickstart
        .wait_line("the Ctrl-C hint", Duration::from_secs(60), |line| {
            line.contains("Ctrl-C")
        })
        .await;

    quickstart.interrupt();
    let status = quickstart.wait_exit(EXIT_WITHIN).await;
    assert!(
        status.success(),
        "quickstart exited with {status} after SIGINT"
    );
}
