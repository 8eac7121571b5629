//! The tables are the warehouse: a HubSpot sync lands in `hubspot.contacts`, one row per
//! record, where plain SQL reads it.

use std::time::Duration;

use tokio_postgres::NoTls;
use weld_pipeline::store::{Desired, StreamEntry, StreamStore};
use weld_pipeline::{Checkpoint, Pipeline, RunContext, RunOutcome, StreamName, Timestamp};
use weld_pipeline_http::hubspot::{self, HubSpotAccount, HubSpotObject, Token};
use weld_pipeline_http::hubspot_fake::{FakeConfig, FakeHubSpot, Mutation};
use weld_pipeline_postgres::{testing, PostgresConfig, PostgresStore};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hubspot_sync_lands_in_hubspot_contacts_where_sql_reads_it() {
    let Some(cluster) = testing::shared() else {
        return;
    };
    cluster.create_database("warehouse").await;
    let url = cluster.url("warehouse");
    let store = PostgresStore::open(&PostgresConfig::new(&url))
        .await
        .unwrap();
    let stream = StreamName::new("contacts").unwrap();
    store
        .put_stream(&StreamEntry {
            name: stream.clone(),
            config: serde_json::from_value(serde_json::json!({
                "source": {"kind": "hubspot", "object": "contacts"},
                "interval_secs": 300,
            }))
            .unwrap(),
            desired: Desired::Running,
            last_error: None,
        })
        .await
        .unwrap();

    let fake = FakeHubSpot::start(
        "127.0.0.1:0",
        FakeConfig {
            contacts: 500,
            custom_properties: 5,
            ..FakeConfig::default()
        },
    )
    .await
    .unwrap();
    let mut account = HubSpotAccount::new(fake.base_url(), Token::new("fake-token"));
    account.settle_delay = Duration::ZERO;
    let source = hubspot::source(account.clone(), HubSpotObject::new("contacts")).unwrap();
    let pipeline = Pipeline::new(source, store.clone());
    let first = pipeline
        .run(&RunContext::new(stream.clone()), Checkpoint::start())
        .await;
    assert_eq!(first.outcome, RunOutcome::Succeeded);
    tokio::time::sleep(Duration::from_millis(50)).await;
    fake.mutate(&Mutation {
        object: "contacts".into(),
        modify: 20,
        archive: 7,
        ..Mutation::default()
    });
    tokio::time::sleep(Duration::from_millis(5)).await;
    let second = pipeline
        .run(&RunContext::new(stream.clone()), first.checkpoint)
        .await;
    assert_eq!(second.outcome, RunOutcome::Succeeded);

    // A user's SQL, against the table as it is.
    let (client, connection) = tokio_postgres::connect(&url, NoTls).await.unwrap();
    tokio::spawn(connection);
    let rows = client
        .query(
            "SELECT id, properties ->> 'email', updated_at, archived, created_at
             FROM hubspot.contacts ORDER BY id::bigint",
            &[],
        )
        .await
        .unwrap();
    let truth = fake.dump("contacts");
    assert_eq!(rows.len(), truth.len());
    for (row, truth) in rows.iter().zip(&truth) {
        assert_eq!(row.get::<_, String>(0), truth.id);
        assert_eq!(
            row.get::<_, Option<String>>(1),
            truth.properties["email"],
            "contact {}",
            truth.id
        );
        let updated: std::time::SystemTime = row.get(2);
        let millis = updated
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        assert_eq!(
            Timestamp::from_millis(millis),
            Timestamp::parse_rfc3339(&truth.updated_at).unwrap()
        );
        assert_eq!(row.get::<_, bool>(3), truth.archived);
        assert!(row.get::<_, Option<std::time::SystemTime>>(4).is_some());
    }
    let archived: i64 = client
        .query_one(
            "SELECT count(*) FROM hubspot.contacts WHERE archived AND archived_at IS NOT NULL",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(archived, 7);
    let counts = store.counts(&stream).await.unwrap();
    assert_eq!((counts.live, counts.archived), (493, 7));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nul_in_a_value_is_stored_as_u_fffd_instead_of_refusing_the_commit() {
    let Some(cluster) = testing::shared() else {
        return;
    };
    cluster.create_database("nul").await;
    let store = PostgresStore::open(&PostgresConfig::new(cluster.url("nul")))
        .await
        .unwrap();
    let stream = StreamName::new("contacts").unwrap();
    let data =
        weld_pipeline::Json::parse(br#"{"id":"1","properties":{"note":"a\u0000b"}}"#.to_vec())
            .unwrap();
    let batch = weld_pipeline::Batch {
        stream: stream.clone(),
        run_id: weld_pipeline::RunId(1),
        seq: 0,
        epoch: 0,
        repaired: 0,
        last: true,
        cursor: Checkpoint::from_bytes("done"),
        records: vec![weld_pipeline::Record::new(
            "1",
            Timestamp::from_millis(1),
            data,
        )],
    };
    let commit = weld_pipeline::Sink::commit(&store, &batch).await.unwrap();
    assert_eq!(commit, weld_pipeline::Commit::Stored { records: 1 });
    let page = store
        .records(&stream, None, 10, weld_pipeline::store::Archived::All)
        .await
        .unwrap();
    let stored: serde_json::Value = page.records[0].data.decode().unwrap();
    assert_eq!(stored["properties"]["note"], "a\u{fffd}b");
}
