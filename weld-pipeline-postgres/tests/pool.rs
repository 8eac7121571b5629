//! The pool's read connections: commits never take them, so a records page is served while
//! every connection commits may use waits (here on a lock another session holds).

use std::time::Duration;

use tokio_postgres::NoTls;
use weld_pipeline::store::{Archived, StreamStore};
use weld_pipeline::{Batch, Checkpoint, Json, Record, RunId, Sink, StreamName, Timestamp};
use weld_pipeline_postgres::{testing, PostgresConfig, PostgresStore};

/// How long each step may take.
const WITHIN: Duration = Duration::from_secs(15);

fn batch(stream: &StreamName, seq: u64) -> Batch {
    Batch::new(stream.clone(), RunId(3), seq)
        .with_records(
            (seq * 10..seq * 10 + 10)
                .map(|id| {
                    Record::new(
                        id.to_string(),
                        Timestamp::from_millis(1_700_000_000_000),
                        Json::parse(format!(r#"{{"id":"{id}"}}"#).into_bytes()).unwrap(),
                    )
                })
                .collect(),
        )
        .with_cursor(Checkpoint::from_bytes(format!("after-{seq}").into_bytes()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_records_page_is_served_while_every_commit_connection_waits() {
    let Some(cluster) = testing::shared() else {
        return;
    };
    cluster.create_database("pool_reads").await;
    let url = cluster.url("pool_reads");
    // Three connections, one of them kept from commits.
    let config = PostgresConfig {
        pool_size: 3,
        read_connections: 1,
        ..PostgresConfig::new(&url)
    };
    let store = PostgresStore::open(&config).await.unwrap();
    let stream = StreamName::new("pooled").unwrap();
    store.commit(&batch(&stream, 0)).await.unwrap();

    // Another session holds the records table against writes; plain reads still pass.
    let (locker, connection) = tokio_postgres::connect(&url, NoTls).await.unwrap();
    let connection = tokio::spawn(connection);
    let table: String = locker
        .query_one(
            "SELECT records_table FROM weld.streams WHERE name = $1",
            &[&stream.as_str()],
        )
        .await
        .unwrap()
        .get(0);
    locker
        .batch_execute(&format!("BEGIN; LOCK TABLE {table} IN EXCLUSIVE MODE"))
        .await
        .unwrap();
    // Six commits: two take the commit connections and wait on the lock, four wait their turn.
    let commits: Vec<_> = (1..7)
        .map(|seq| {
            let (store, batch) = (store.clone(), batch(&stream, seq));
            tokio::spawn(async move { store.commit(&batch).await })
        })
        .collect();
    tokio::time::timeout(WITHIN, async {
        loop {
            let waiting: i64 = locker
                .query_one(
                    "SELECT count(*) FROM pg_locks WHERE NOT granted AND database =
                         (SELECT oid FROM pg_database WHERE datname = current_database())",
                    &[],
                )
                .await
                .unwrap()
                .get(0);
            assert!(
                waiting <= 2,
                "{waiting} commits on the lock: more than the pool leaves them"
            );
            if waiting == 2 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("two commits waiting on the lock");

    // The read connection serves a page meanwhile (the pool's wait for a connection would
    // take 10 s, past this deadline).
    let page = tokio::time::timeout(
        Duration::from_secs(5),
        store.records(&stream, None, 100, Archived::Live),
    )
    .await
    .expect("a records page while the commits wait")
    .unwrap();
    assert_eq!(page.records.len(), 10);

    locker.batch_execute("COMMIT").await.unwrap();
    for commit in commits {
        tokio::time::timeout(WITHIN, commit)
            .await
            .expect("every commit once the lock is gone")
            .unwrap()
            .unwrap();
    }
    let page = store
        .records(&stream, None, 100, Archived::Live)
        .await
        .unwrap();
    assert_eq!(page.records.len(), 70);
    drop(locker);
    let _ = connection.await;
}
