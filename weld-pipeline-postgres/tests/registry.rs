//! Registry changes reach every replica on the database (LISTEN/NOTIFY), and the watcher
//! reconnects by itself when its connection is cut, saying so.

use std::time::Duration;

use tokio_postgres::NoTls;
use weld_pipeline::store::{Desired, StreamEntry, StreamStore};
use weld_pipeline::StreamName;
use weld_pipeline_postgres::{
    testing, PostgresConfig, PostgresStore, RegistryChange, RegistryChanges,
};

/// How long a notification may take to arrive.
const WITHIN: Duration = Duration::from_secs(15);

async fn next(changes: &mut RegistryChanges) -> RegistryChange {
    tokio::time::timeout(WITHIN, changes.next())
        .await
        .expect("a registry change within the deadline")
        .expect("the watcher lives")
}

fn entry(name: &StreamName) -> StreamEntry {
    StreamEntry {
        name: name.clone(),
        config: serde_json::from_value(serde_json::json!({
            "source": {"kind": "generator", "records": 10},
            "interval_secs": 300,
        }))
        .unwrap(),
        desired: Desired::Running,
        last_error: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_on_one_replica_reaches_the_other_also_after_its_connection_is_cut() {
    let Some(cluster) = testing::shared() else {
        return;
    };
    cluster.create_database("registry_watch").await;
    let url = cluster.url("registry_watch");
    let config = PostgresConfig::new(&url);
    let (a, b) = (
        PostgresStore::open(&config).await.unwrap(),
        PostgresStore::open(&config).await.unwrap(),
    );
    let mut changes = b.watch_registry();
    let s1 = StreamName::new("s1").unwrap();

    // The watcher listens once its connection is made: until then, a change may pass it by.
    // Announce until the first arrives.
    let first = tokio::time::timeout(WITHIN, async {
        loop {
            a.put_stream(&entry(&s1)).await.unwrap();
            if let Ok(Some(change)) =
                tokio::time::timeout(Duration::from_millis(200), changes.next()).await
            {
                return change;
            }
        }
    })
    .await
    .expect("the watcher hears a put within the deadline");
    assert_eq!(first, RegistryChange::Stream(s1.clone()));
    // Drain what the retries announced.
    while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(300), changes.next()).await {
    }

    a.resync(&s1).await.unwrap();
    assert_eq!(next(&mut changes).await, RegistryChange::Stream(s1.clone()));
    a.delete_stream(&s1).await.unwrap();
    assert_eq!(next(&mut changes).await, RegistryChange::Stream(s1.clone()));

    // The listening connection is cut: the watcher connects again and says changes may have
    // been missed; later ones arrive again.
    let (admin, connection) = tokio_postgres::connect(&url, NoTls).await.unwrap();
    let connection = tokio::spawn(connection);
    let cut = admin
        .query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE datname = 'registry_watch' AND query = 'LISTEN weld_registry'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(cut.len(), 1, "one listening connection");
    assert_eq!(next(&mut changes).await, RegistryChange::Reconnected);
    let s2 = StreamName::new("s2").unwrap();
    a.put_stream(&entry(&s2)).await.unwrap();
    assert_eq!(next(&mut changes).await, RegistryChange::Stream(s2));
    drop(admin);
    let _ = connection.await;
}
