//! End to end, the one-command demo: `quickstart` syncs, shows stored records, prints the
//! dashboard's address (where the dashboard answers), serves until Ctrl-C, and then exits
//! cleanly.

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
    // The dashboard's address, and the dashboard there.
    let line = quickstart
        .wait_line("the dashboard's address", Duration::from_secs(60), |line| {
            line.starts_with("The dashboard, in a browser: http://")
        })
        .await;
    let url = line.rsplit(' ').next().expect("an address ends the line");
    let page = http_client()
        .get(url)
        .send()
        .await
        .expect("the dashboard answers");
    assert_eq!(page.status(), 200);
    let page = page.text().await.expect("a page");
    assert!(
        page.contains(r#"<tr data-stream="contacts">"#),
        "the dashboard lists the quickstart's streams: {page}"
    );
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
