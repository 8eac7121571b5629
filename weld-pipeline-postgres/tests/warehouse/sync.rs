//! A HubSpot sync, as a worker runs it, lands where a user's SQL reads it.

use weld_pipeline_hubspot::fake::Dumped;
use weld_pipeline_hubspot::OnPermanentDelete;

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hubspot_sync_lands_in_hubspot_contacts_where_sql_reads_it() {
    let Some((store, client)) = warehouse("warehouse").await else {
        return;
    };
    let stream = StreamName::new("contacts").unwrap();
    store.put_stream(&contacts_entry(&stream)).await.unwrap();
    let fake = sync_twice(&store, &stream).await;

    // A user's SQL, against the table as it is.
    let truth = fake.dump("contacts");
    the_table_holds_the_fakes_contacts(&store, &stream, &client, &truth).await;
    the_typed_view_reads_each_property_as_its_type(&client, &truth).await;
    the_link_table_holds_the_fakes_links(&client, &fake, &truth).await;
}

/// Syncs `stream` from a fake portal of 500 contacts as a worker's runs do, twice: once in
/// full, and once after 20 contacts changed and 7 were archived. Returns the fake.
async fn sync_twice(store: &PostgresStore, stream: &StreamName) -> FakeHubSpot {
    let fake = FakeHubSpot::start(
        "127.0.0.1:0",
        FakeConfig {
            contacts: 500,
            custom_properties: 8,
            ..FakeConfig::default()
        },
    )
    .await
    .unwrap();
    let mut account = HubSpotAccount::new(fake.base_url(), Token::new("fake-token"));
    account.settle_delay = Duration::ZERO;
    let mut object = HubSpotObject::new("contacts");
    object.associations = vec!["companies".into()];
    let source = hubspot::source(account.clone(), object).unwrap();
    let pipeline = Pipeline::new(source, store.clone());
    // As a worker's runs do: describing the fields to the store, which makes the typed view.
    let run = || RunContext::new(stream.clone()).with_catalog(Arc::new(store.clone()));
    let first = pipeline.run(&run(), Checkpoint::start()).await;
    assert_eq!(first.outcome, RunOutcome::Succeeded);
    tokio::time::sleep(Duration::from_millis(50)).await;
    fake.mutate(&Mutation {
        object: "contacts".into(),
        modify: 20,
        archive: 7,
        ..Mutation::default()
    });
    tokio::time::sleep(Duration::from_millis(5)).await;
    let second = pipeline.run(&run(), first.checkpoint).await;
    assert_eq!(second.outcome, RunOutcome::Succeeded);
    fake
}

/// The records table, read by plain SQL, holds the fake's contacts as they are, and the
/// store counts them.
async fn the_table_holds_the_fakes_contacts(
    store: &PostgresStore,
    stream: &StreamName,
    client: &tokio_postgres::Client,
    truth: &[Dumped],
) {
    let rows = client
        .query(
            "SELECT id, properties ->> 'email', updated_at, archived, created_at
             FROM hubspot.contacts ORDER BY id::bigint",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), truth.len());
    for (row, truth) in rows.iter().zip(truth) {
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
    let counts = store.counts(stream).await.unwrap();
    assert_eq!((counts.live, counts.archived), (493, 7));
}

/// The typed view reads each property as its HubSpot type.
async fn the_typed_view_reads_each_property_as_its_type(
    client: &tokio_postgres::Client,
    truth: &[Dumped],
) {
    // The typed view: each property as its HubSpot type. The fake's custom properties cycle
    // through string, number, date, datetime, enumeration, bool, phone_number and a
    // multiple-choice enumeration.
    let typed = client
        .query(
            "SELECT id, email, custom_property_001::text, custom_property_002::text,
                    (extract(epoch FROM custom_property_003) * 1000)::bigint,
                    custom_property_005, custom_property_007,
                    pg_typeof(custom_property_001)::text, pg_typeof(custom_property_002)::text,
                    pg_typeof(custom_property_003)::text
             FROM hubspot.contacts_typed ORDER BY id::bigint",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(typed.len(), truth.len());
    let value = |truth: &weld_pipeline_hubspot::fake::Dumped, name: &str| {
        truth
            .properties
            .get(name)
            .cloned()
            .flatten()
            .filter(|v| !v.is_empty())
    };
    let mut seen = [0usize; 5];
    for (row, truth) in typed.iter().zip(truth) {
        let types: (String, String, String) = (row.get(7), row.get(8), row.get(9));
        assert_eq!(
            types,
            (
                "numeric".into(),
                "date".into(),
                "timestamp with time zone".into()
            )
        );
        assert_eq!(row.get::<_, Option<String>>(1), value(truth, "email"));
        let number: Option<String> = row.get(2);
        assert_eq!(number, value(truth, "custom_property_001"), "{}", truth.id);
        let date: Option<String> = row.get(3);
        assert_eq!(date, value(truth, "custom_property_002"), "{}", truth.id);
        let instant: Option<i64> = row.get(4);
        assert_eq!(
            instant,
            value(truth, "custom_property_003")
                .map(|v| Timestamp::parse_rfc3339(&v).unwrap().as_millis())
        );
        let flag: Option<bool> = row.get(5);
        assert_eq!(
            flag,
            value(truth, "custom_property_005").map(|v| v == "true")
        );
        let list: Option<Vec<String>> = row.get(6);
        assert_eq!(
            list,
            value(truth, "custom_property_007")
                .map(|v| v.split(';').map(String::from).collect::<Vec<_>>())
        );
        for (i, some) in [
            number.is_some(),
            date.is_some(),
            instant.is_some(),
            flag.is_some(),
            list.is_some(),
        ]
        .into_iter()
        .enumerate()
        {
            seen[i] += usize::from(some);
        }
    }
    assert!(
        seen.iter().all(|n| *n > 0),
        "every kind seen with a value: {seen:?}"
    );
}

/// The link table holds the fake's links of the live contacts.
async fn the_link_table_holds_the_fakes_links(
    client: &tokio_postgres::Client,
    fake: &FakeHubSpot,
    truth: &[Dumped],
) {
    // The association link table equals the fake's links of the live contacts (an archived
    // record as the archived listing returns it has none), both directions of a link's types
    // included.
    let links = client
        .query(
            "SELECT l.from_id, l.to_id, count(*), bool_or(l.category = 'HUBSPOT_DEFINED')
             FROM hubspot.contacts_associations l JOIN hubspot.contacts c ON c.id = l.from_id
             WHERE l.to_type = 'companies' AND NOT c.archived
             GROUP BY l.from_id, l.to_id ORDER BY l.from_id, l.to_id",
            &[],
        )
        .await
        .unwrap();
    let mut stored: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for row in &links {
        assert!(row.get::<_, i64>(2) >= 1 && row.get::<_, bool>(3));
        stored.entry(row.get(0)).or_default().push(row.get(1));
    }
    let live: std::collections::BTreeSet<&str> = truth
        .iter()
        .filter(|t| !t.archived)
        .map(|t| t.id.as_str())
        .collect();
    let mut expected = fake.associations("contacts", "companies");
    expected.retain(|id, _| live.contains(id.as_str()));
    for ids in expected.values_mut() {
        ids.sort();
    }
    assert_eq!(stored, expected);
    assert!(!expected.is_empty());
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
    let batch = weld_pipeline::Batch::new(stream.clone(), weld_pipeline::RunId(1), 0)
        .with_records(vec![weld_pipeline::Record::new(
            "1",
            Timestamp::from_millis(1),
            data,
        )])
        .with_cursor(Checkpoint::from_bytes("done"))
        .with_last(true);
    let commit = weld_pipeline::Sink::commit(&store, &batch).await.unwrap();
    assert_eq!(commit, weld_pipeline::Commit::Stored { records: 1 });
    let page = store
        .records(&stream, None, 10, weld_pipeline::store::Archived::All)
        .await
        .unwrap();
    let stored: serde_json::Value = page.records[0].data.decode().unwrap();
    assert_eq!(stored["properties"]["note"], "a\u{fffd}b");
}

/// A `purge` stream (`on_permanent_delete`) resynced after HubSpot deleted records for good:
/// when its run ends, none of them has a row in its table, its typed view or its link table,
/// and the others are all there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_stream_resynced_after_hard_deletes_keeps_no_row_of_them() {
    let Some((store, client)) = warehouse("purge_sync").await else {
        return;
    };
    let stream = StreamName::new("contacts").unwrap();
    store.put_stream(&contacts_entry(&stream)).await.unwrap();
    let fake = FakeHubSpot::start(
        "127.0.0.1:0",
        FakeConfig {
            contacts: 300,
            custom_properties: 4,
            ..FakeConfig::default()
        },
    )
    .await
    .unwrap();
    let mut account = HubSpotAccount::new(fake.base_url(), Token::new("fake-token"));
    account.settle_delay = Duration::ZERO;
    let mut object = HubSpotObject::new("contacts").with_associations(["companies"]);
    object.on_permanent_delete = OnPermanentDelete::Purge;
    let pipeline = Pipeline::new(hubspot::source(account, object).unwrap(), store.clone());
    // As a worker's runs do: the store describes the fields and tells what it holds.
    let run = || {
        RunContext::new(stream.clone())
            .with_catalog(Arc::new(store.clone()))
            .with_inventory(Arc::new(store.clone()))
    };
    let first = pipeline.run(&run(), Checkpoint::start()).await;
    assert_eq!(first.outcome, RunOutcome::Succeeded);
    let before: Vec<String> = fake.dump("contacts").into_iter().map(|d| d.id).collect();

    fake.mutate(&Mutation {
        object: "contacts".into(),
        delete: 6,
        ..Mutation::default()
    });
    let after: Vec<String> = fake.dump("contacts").into_iter().map(|d| d.id).collect();
    let gone: Vec<&String> = before.iter().filter(|id| !after.contains(id)).collect();
    assert_eq!(gone.len(), 6);
    let resync = pipeline.run(&run(), Checkpoint::start()).await;
    assert_eq!(resync.outcome, RunOutcome::Succeeded);

    let ids: Vec<&str> = gone.iter().map(|id| id.as_str()).collect();
    let (client, ids) = (&client, &ids);
    let count = |sql: &'static str| async move {
        client
            .query_one(sql, &[ids])
            .await
            .unwrap()
            .get::<_, i64>(0)
    };
    assert_eq!(
        [
            count("SELECT count(*) FROM hubspot.contacts WHERE id = ANY($1)").await,
            count("SELECT count(*) FROM hubspot.contacts_typed WHERE id = ANY($1)").await,
            count("SELECT count(*) FROM hubspot.contacts_associations WHERE from_id = ANY($1)")
                .await,
        ],
        [0, 0, 0],
        "no trace of {gone:?}"
    );
    let held: i64 = client
        .query_one("SELECT count(*) FROM hubspot.contacts", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(held as usize, after.len(), "every other record is there");
    let runs = store.runs(&stream, 1).await.unwrap();
    assert_eq!(runs[0].purged, 6, "{:?}", runs[0]);
}
