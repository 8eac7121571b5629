//! The tables are the warehouse: a HubSpot sync lands in `hubspot.contacts`, one row per
//! record, where plain SQL reads it.

use std::sync::Arc;
use std::time::Duration;

use tokio_postgres::NoTls;
use weld_pipeline::source::{Field, FieldKind, Schema};
use weld_pipeline::store::{Desired, RunState, StreamEntry, StreamStore};
use weld_pipeline::{
    Batch, Checkpoint, Json, Pipeline, Record, RunContext, RunId, RunOutcome, Sink, StreamName,
    Timestamp,
};
use weld_pipeline_hubspot::fake::{FakeConfig, FakeHubSpot, Mutation};
use weld_pipeline_hubspot::{self as hubspot, HubSpotAccount, HubSpotObject, Token};
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
    store.put_stream(&contacts_entry(&stream)).await.unwrap();

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
    for (row, truth) in typed.iter().zip(&truth) {
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
    let batch = weld_pipeline::Batch {
        stream: stream.clone(),
        run_id: weld_pipeline::RunId(1),
        seq: 0,
        epoch: 0,
        lease: 0,
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

/// A running stream of HubSpot contacts named `stream`.
fn contacts_entry(stream: &StreamName) -> StreamEntry {
    StreamEntry {
        name: stream.clone(),
        config: serde_json::from_value(serde_json::json!({
            "source": {"kind": "hubspot", "object": "contacts"},
            "interval_secs": 300,
        }))
        .unwrap(),
        desired: Desired::Running,
        last_error: None,
    }
}

/// A database of its own on the shared cluster, its store and a client for a user's SQL.
async fn warehouse(name: &str) -> Option<(PostgresStore, tokio_postgres::Client)> {
    let cluster = testing::shared()?;
    cluster.create_database(name).await;
    let url = cluster.url(name);
    let store = PostgresStore::open(&PostgresConfig::new(&url))
        .await
        .unwrap();
    let (client, connection) = tokio_postgres::connect(&url, NoTls).await.unwrap();
    tokio::spawn(connection);
    Some((store, client))
}

/// A batch of `records` (`(id, version, document)`) as run 1's batch `seq`.
fn batch(stream: &StreamName, seq: u64, records: &[(&str, i64, serde_json::Value)]) -> Batch {
    Batch {
        stream: stream.clone(),
        run_id: RunId(1),
        seq,
        epoch: 0,
        lease: 0,
        repaired: 0,
        last: false,
        cursor: Checkpoint::from_bytes(format!("c{seq}")),
        records: records
            .iter()
            .map(|(id, at, data)| {
                Record::new(
                    *id,
                    Timestamp::from_millis(*at),
                    Json::parse(data.to_string().into_bytes()).unwrap(),
                )
            })
            .collect(),
    }
}

fn field(name: &str, kind: FieldKind) -> Field {
    Field {
        name: name.into(),
        kind,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_typed_view_casts_safely_changes_with_the_schema_and_goes_with_its_stream() {
    let Some((store, client)) = warehouse("typed").await else {
        return;
    };
    let stream = StreamName::new("deals").unwrap();
    let schema = Schema::new([
        field("amount", FieldKind::Number),
        field("closed", FieldKind::Boolean),
        field("closedate", FieldKind::DateTime),
        field("birthday", FieldKind::Date),
        field("tags", FieldKind::List),
        field("id", FieldKind::Text),
    ]);
    store.describe(&stream, &schema).await.unwrap();
    let good = serde_json::json!({"properties": {
        "amount": "12.50", "closed": "TRUE", "closedate": "2024-05-01T12:00:00.000Z",
        "birthday": "1990-02-03", "tags": "a;b", "id": "shadowed"}});
    let millis = serde_json::json!({"properties": {
        "closedate": "1714564800000", "birthday": "633830400000", "amount": "-3e2"}});
    let bad = serde_json::json!({"properties": {
        "amount": "twelve", "closed": "maybe", "closedate": "2024-13-45T99:00:00Z",
        "birthday": "today", "tags": ""}});
    let empty = serde_json::json!({"properties": {"amount": "", "closedate": ""}});
    let odd = serde_json::json!({"properties": "not an object"});
    Sink::commit(
        &store,
        &batch(
            &stream,
            0,
            &[
                ("1", 1, good),
                ("2", 1, millis),
                ("3", 1, bad),
                ("4", 1, empty),
                ("5", 1, odd),
            ],
        ),
    )
    .await
    .unwrap();
    let rows = client
        .query(
            r#"SELECT id, amount::text, closed, (extract(epoch FROM closedate) * 1000)::bigint,
                      birthday::text, tags, property_id
               FROM weld_records.deals_typed ORDER BY id"#,
            &[],
        )
        .await
        .expect("one bad value breaks no query");
    type Row = (
        String,
        Option<String>,
        Option<bool>,
        Option<i64>,
        Option<String>,
        Option<Vec<String>>,
        Option<String>,
    );
    let got: Vec<Row> = rows
        .iter()
        .map(|r| {
            (
                r.get(0),
                r.get(1),
                r.get(2),
                r.get(3),
                r.get(4),
                r.get(5),
                r.get(6),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (
                "1".into(),
                Some("12.50".into()),
                Some(true),
                Some(1_714_564_800_000),
                Some("1990-02-03".into()),
                Some(vec!["a".into(), "b".into()]),
                Some("shadowed".into()),
            ),
            (
                "2".into(),
                Some("-300".into()),
                None,
                Some(1_714_564_800_000),
                Some("1990-02-01".into()),
                None,
                None,
            ),
            (String::from("3"), None, None, None, None, None, None),
            (String::from("4"), None, None, None, None, None, None),
            (String::from("5"), None, None, None, None, None, None),
        ]
    );

    // A property added before the others and one removed: the view is made again.
    let changed = Schema::new([
        field("aaa_first", FieldKind::Number),
        field("amount", FieldKind::Text),
    ]);
    store.describe(&stream, &changed).await.unwrap();
    let columns: Vec<String> = client
        .query(
            "SELECT column_name::text FROM information_schema.columns
             WHERE table_schema = 'weld_records' AND table_name = 'deals_typed'
             ORDER BY ordinal_position",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        columns,
        [
            "id",
            "updated_at",
            "created_at",
            "archived",
            "archived_at",
            "_weld_run_id",
            "_weld_synced_at",
            "aaa_first",
            "amount"
        ]
    );
    // A user's view on top of it keeps it as it is: describing says why, commits go on.
    client
        .batch_execute("CREATE VIEW public.mine AS SELECT id, amount FROM weld_records.deals_typed")
        .await
        .unwrap();
    let error = store
        .describe(&stream, &Schema::new([field("zzz", FieldKind::Text)]))
        .await
        .unwrap_err();
    assert!(
        error.to_string().contains("other objects depend on it"),
        "{error}"
    );
    let later = serde_json::json!({"properties": {"amount": "7"}});
    Sink::commit(&store, &batch(&stream, 1, &[("1", 2, later)]))
        .await
        .unwrap();
    let amount: Option<String> = client
        .query_one("SELECT amount FROM public.mine WHERE id = '1'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(amount.as_deref(), Some("7"));
    client.batch_execute("DROP VIEW public.mine").await.unwrap();

    store.delete_stream(&stream).await.unwrap();
    let left: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_class WHERE relname LIKE 'deals%'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        left, 0,
        "the table, its view and its index went with the stream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_link_table_follows_every_write_of_a_records_associations() {
    let Some((store, client)) = warehouse("links").await else {
        return;
    };
    let stream = StreamName::new("contacts").unwrap();
    let link = |id: &str, type_id: u32| {
        serde_json::json!({"id": id, "types": [
            {"category": "HUBSPOT_DEFINED", "typeId": type_id, "label": null}]})
    };
    let with = |companies: Vec<serde_json::Value>, deals: Vec<serde_json::Value>| serde_json::json!({"properties": {}, "associations": {"companies": companies, "deals": deals}});
    let links = || async {
        client
            .query(
                "SELECT from_id || '>' || to_type || ':' || to_id || '/' || type_id
                 FROM weld_records.contacts_associations ORDER BY 1",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get::<_, String>(0))
            .collect::<Vec<_>>()
    };
    // No associations yet: no link table.
    Sink::commit(
        &store,
        &batch(
            &stream,
            0,
            &[("9", 1, serde_json::json!({"properties": {}}))],
        ),
    )
    .await
    .unwrap();
    let exists: bool = client
        .query_one(
            "SELECT to_regclass('weld_records.contacts_associations') IS NOT NULL",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(!exists);

    Sink::commit(
        &store,
        &batch(
            &stream,
            1,
            &[
                ("1", 1, with(vec![link("10", 1), link("11", 279)], vec![link("20", 4)])),
                ("2", 1, with(vec![link("10", 1)], vec![])),
                // A malformed member gives no link, not a refused commit.
                ("3", 1, serde_json::json!({"associations": {"companies": "x", "deals": [7, {"no": "id"}]}})),
            ],
        ),
    )
    .await
    .unwrap();
    assert_eq!(
        links().await,
        [
            "1>companies:10/1",
            "1>companies:11/279",
            "1>deals:20/4",
            "2>companies:10/1"
        ]
    );
    // A newer version replaces a record's links; an older one changes nothing.
    Sink::commit(
        &store,
        &batch(
            &stream,
            2,
            &[
                ("1", 2, with(vec![link("12", 1)], vec![])),
                ("2", 0, with(vec![], vec![])),
            ],
        ),
    )
    .await
    .unwrap();
    assert_eq!(links().await, ["1>companies:12/1", "2>companies:10/1"]);
    // An amendment (a merge) keeps the links of the document it amends.
    let mut merged = batch(
        &stream,
        3,
        &[(
            "2",
            5,
            serde_json::json!({"archived": true, "merged_into": "1"}),
        )],
    );
    merged.records[0].archived = true;
    merged.records[0].amend = true;
    Sink::commit(&store, &merged).await.unwrap();
    assert_eq!(links().await, ["1>companies:12/1", "2>companies:10/1"]);
    // A version without associations (the stream no longer asks for them) has none.
    Sink::commit(
        &store,
        &batch(
            &stream,
            4,
            &[("1", 3, serde_json::json!({"properties": {}}))],
        ),
    )
    .await
    .unwrap();
    assert_eq!(links().await, ["2>companies:10/1"]);
    // Replayed: nothing moves.
    Sink::commit(
        &store,
        &batch(&stream, 1, &[("1", 1, with(vec![link("10", 1)], vec![]))]),
    )
    .await
    .unwrap();
    assert_eq!(links().await, ["2>companies:10/1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ledger_of_runs_long_superseded_is_folded_and_nothing_read_from_it_changes() {
    let Some((store, client)) = warehouse("fold").await else {
        return;
    };
    let stream = StreamName::new("contacts").unwrap();
    let doc = |n: i64| serde_json::json!({"properties": {"n": n}});
    let of_run =
        |run: u64, seq: u64, last: bool, records: &[(&str, i64, serde_json::Value)]| Batch {
            run_id: RunId(run),
            last,
            ..batch(&stream, seq, records)
        };
    // Run 1: three batches, one record archived by the last; run 2: one batch.
    for (seq, records) in [
        vec![("1", 1, doc(1)), ("2", 1, doc(2))],
        vec![("3", 1, doc(3))],
        vec![("4", 1, doc(4))],
    ]
    .into_iter()
    .enumerate()
    {
        Sink::commit(&store, &of_run(1, seq as u64, seq == 2, &records))
            .await
            .unwrap();
    }
    let mut archive = of_run(2, 0, true, &[("2", 2, doc(2))]);
    archive.records[0].archived = true;
    Sink::commit(&store, &archive).await.unwrap();
    let ledger_rows = || async {
        client
            .query_one("SELECT count(*) FROM weld.batches", &[])
            .await
            .unwrap()
            .get::<_, i64>(0)
    };
    assert_eq!(ledger_rows().await, 4);
    let before = (
        store.counts(&stream).await.unwrap(),
        store.runs(&stream, 10).await.unwrap(),
    );

    // Run 3 begins: run 1, committed two hours ago, is folded; run 2, just now, is not.
    client
        .batch_execute(
            "UPDATE weld.batches SET committed_at = now() - interval '2 hours' WHERE run_id = 1",
        )
        .await
        .unwrap();
    Sink::commit(&store, &of_run(3, 0, false, &[("5", 1, doc(5))]))
        .await
        .unwrap();
    assert_eq!(ledger_rows().await, 2, "run 2's row and run 3's remain");
    let counts = store.counts(&stream).await.unwrap();
    assert_eq!(
        (counts.live, counts.archived),
        (before.0.live + 1, before.0.archived)
    );
    assert_eq!((counts.live, counts.archived), (4, 1));
    let runs = store.runs(&stream, 10).await.unwrap();
    let run_1 = |runs: &[weld_pipeline::store::RunRecord]| {
        runs.iter().find(|r| r.id == RunId(1)).cloned().unwrap()
    };
    let (folded, unfolded) = (run_1(&runs), run_1(&before.1));
    assert_eq!(
        (
            folded.batches,
            folded.records,
            folded.state,
            folded.progress
        ),
        (
            unfolded.batches,
            unfolded.records,
            unfolded.state,
            unfolded.progress
        )
    );
    assert_eq!(folded.batches, 3);
    assert!(folded.finished_at.is_some());
    assert_eq!(
        store.checkpoint(&stream).await.unwrap(),
        Checkpoint::from_bytes("c0")
    );

    // Folding again adds nothing twice; deleting the stream takes its totals.
    client
        .batch_execute("UPDATE weld.batches SET committed_at = now() - interval '2 hours'")
        .await
        .unwrap();
    Sink::commit(&store, &of_run(4, 0, false, &[("6", 1, doc(6))]))
        .await
        .unwrap();
    let counts = store.counts(&stream).await.unwrap();
    assert_eq!((counts.live, counts.archived), (5, 1));
    assert_eq!(store.runs(&stream, 10).await.unwrap().len(), 4);
    store.delete_stream(&stream).await.unwrap();
    let totals: i64 = client
        .query_one("SELECT count(*) FROM weld.totals", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(totals, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_run_is_summed_as_it_commits_and_reads_the_same_as_its_ledger() {
    let Some((store, client)) = warehouse("summed").await else {
        return;
    };
    let stream = StreamName::new("contacts").unwrap();
    // Batch `seq` of a run: one record, every tenth archived, `seq % 3` repaired.
    let commit = |run: u64, seq: u64, last: bool| {
        let (store, stream) = (store.clone(), stream.clone());
        async move {
            let id = format!("{run}-{seq}");
            let mut batch = Batch {
                run_id: RunId(run),
                last,
                repaired: seq % 3,
                ..batch(&stream, seq, &[(&id, 1, serde_json::json!({"n": seq}))])
            };
            batch.records[0].archived = seq % 10 == 0;
            Sink::commit(&store, &batch).await.unwrap();
        }
    };
    // What the store reads, and the same figures summed from every ledger row of the run.
    let read = || async {
        let counts = store.counts(&stream).await.unwrap();
        let run = store.runs(&stream, 1).await.unwrap().remove(0);
        (
            counts.live,
            counts.archived,
            run.batches,
            run.records,
            run.repaired,
            run.progress.contiguous,
            run.state,
        )
    };
    let summed_seq = || async {
        client
            .query_one("SELECT summed_seq FROM weld.runs WHERE run_id = 1", &[])
            .await
            .unwrap()
            .get::<_, Option<i64>>(0)
    };

    // Batch 40 arrives late: the sum at batch 63 stops before it.
    for seq in (0..=63).filter(|s| *s != 40) {
        commit(1, seq, false).await;
    }
    assert_eq!(summed_seq().await, Some(39));
    let gapped = read().await;
    assert_eq!((gapped.2, gapped.3), (63, 63), "63 batches committed");
    assert_eq!(
        (gapped.0, gapped.1),
        (57, 6),
        "seqs 0-63 but 40, every tenth archived"
    );
    assert_eq!(gapped.6, RunState::Running);
    commit(1, 40, false).await;
    for seq in 64..200 {
        commit(1, seq, seq == 199).await;
    }
    assert_eq!(summed_seq().await, Some(191));
    let whole = read().await;
    let repaired: u64 = (0..200).map(|s| s % 3).sum();
    assert_eq!(
        whole,
        (180, 20, 200, 200, repaired, Some(199), RunState::Succeeded)
    );
    let ledger: (i64, i64) = {
        let row = client
            .query_one(
                "SELECT sum(live_delta)::bigint, sum(archived_delta)::bigint FROM weld.batches",
                &[],
            )
            .await
            .unwrap();
        (row.get(0), row.get(1))
    };
    assert_eq!(ledger, (180, 20), "every ledger row is still there");

    // A later run folds it: nothing read changes, the summed rows counted once.
    client
        .batch_execute("UPDATE weld.batches SET committed_at = now() - interval '2 hours'")
        .await
        .unwrap();
    commit(2, 0, false).await;
    let counts = store.counts(&stream).await.unwrap();
    assert_eq!((counts.live, counts.archived), (180, 21));
    let runs = store.runs(&stream, 2).await.unwrap();
    let folded = &runs[1];
    assert_eq!(
        (
            folded.batches,
            folded.records,
            folded.repaired,
            folded.progress.contiguous,
            folded.state
        ),
        (200, 200, repaired, Some(199), RunState::Succeeded)
    );
    assert_eq!(summed_seq().await, None, "folded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_document_is_kept_as_it_came_and_an_older_jsonb_table_is_migrated_to_it() {
    let Some((store, client)) = warehouse("documents").await else {
        return;
    };
    // Keys out of jsonb's order, a repeated key, a number as written: `jsonb` prints
    // `{"id": "1", "zeta": 1.50, ...}`; the store serves the document byte for byte, as sled does.
    let document = r#"{"zeta":1.50,"id":"1","properties":{"b":"2","a":"1","a":"3"}}"#;
    let printed = r#"{"id": "1", "zeta": 1.50, "properties": {"a": "3", "b": "2"}}"#;
    let plain = StreamName::new("plain").unwrap();
    let viewed = StreamName::new("viewed").unwrap();
    for stream in [&plain, &viewed] {
        store.put_stream(&contacts_entry(stream)).await.unwrap();
        commit_document(&store, stream, 0, document).await;
    }
    assert_eq!(first_document(&store, &plain).await, document);
    let plain_table = records_table(&client, &plain).await;
    let viewed_table = records_table(&client, &viewed).await;
    let (kind, a) = document_column(&client, &plain_table).await;
    assert_eq!(kind, "json");
    // `properties` is still `jsonb`: of a repeated key, the last, as jsonb keeps it.
    assert_eq!(a, "3");

    // A database of the version before: both tables' documents in `jsonb`, one of them read by
    // a view of the user's own, under which the column's type cannot change.
    drop(store);
    client
        .batch_execute(&format!(
            "ALTER TABLE {plain_table} ALTER COLUMN data TYPE jsonb USING data::jsonb;
             ALTER TABLE {viewed_table} ALTER COLUMN data TYPE jsonb USING data::jsonb;
             CREATE VIEW public.mine AS SELECT data -> 'zeta' AS zeta FROM {viewed_table};
             DELETE FROM weld.migrations WHERE version = 7;"
        ))
        .await
        .unwrap();
    let url = testing::shared().unwrap().url("documents");
    let store = PostgresStore::open(&PostgresConfig::new(&url))
        .await
        .unwrap();
    assert_eq!(document_column(&client, &plain_table).await.0, "json");
    assert_eq!(document_column(&client, &viewed_table).await.0, "jsonb");
    // What was stored as jsonb reads as jsonb printed it; what is written now, as it came. The
    // table left in jsonb takes and serves the same documents.
    for stream in [&plain, &viewed] {
        assert_eq!(first_document(&store, stream).await, printed);
        commit_document(&store, stream, 1, document).await;
    }
    assert_eq!(first_document(&store, &plain).await, document);
    assert_eq!(first_document(&store, &viewed).await, printed);
    let zeta: String = client
        .query_one("SELECT zeta::text FROM public.mine", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(zeta, "1.50");
    // Links are read from either type of document.
    let linked = r#"{"id":"1","associations":{"companies":[{"id":"7","types":[{"category":"HUBSPOT_DEFINED","typeId":1,"label":null}]}]}}"#;
    for (stream, table) in [(&plain, &plain_table), (&viewed, &viewed_table)] {
        commit_document(&store, stream, 2, linked).await;
        let links = format!("{}_associations\"", table.trim_end_matches('"'));
        let to: String = client
            .query_one(&format!("SELECT to_id FROM {links}"), &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(to, "7", "{links}");
    }
}

/// Commits `document` as record `1`, version `seq + 1`, in run 1's batch `seq`.
async fn commit_document(store: &PostgresStore, stream: &StreamName, seq: u64, document: &str) {
    let mut batch = batch(stream, seq, &[]);
    batch.records = vec![Record::new(
        "1",
        Timestamp::from_millis(seq as i64 + 1),
        Json::parse(document.as_bytes().to_vec()).unwrap(),
    )];
    store.commit(&batch).await.unwrap();
}

/// The document of the stream's first record, as the API's records page serves it.
async fn first_document(store: &PostgresStore, stream: &StreamName) -> String {
    let page = store
        .existing_records(stream, None, 10, weld_pipeline::store::Archived::All)
        .await
        .unwrap()
        .expect("the stream exists");
    String::from_utf8(page.records[0].data.as_bytes().to_vec()).unwrap()
}

async fn records_table(client: &tokio_postgres::Client, stream: &StreamName) -> String {
    client
        .query_one(
            "SELECT records_table FROM weld.streams WHERE name = $1",
            &[&stream.as_str()],
        )
        .await
        .unwrap()
        .get(0)
}

/// The type of the table's `data` column, and its first row's property `a`.
async fn document_column(client: &tokio_postgres::Client, table: &str) -> (String, String) {
    let row = client
        .query_one(
            &format!("SELECT pg_typeof(data)::text, properties ->> 'a' FROM {table} LIMIT 1"),
            &[],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

/// A property name as a SQL identifier, for a user's query of the typed view.
fn quoted(column: &str) -> String {
    format!("\"{}\"", column.replace('"', "\"\""))
}

/// The typed view's columns, in order.
async fn view_columns(client: &tokio_postgres::Client, schema: &str, view: &str) -> Vec<String> {
    client
        .query(
            "SELECT column_name::text FROM information_schema.columns
             WHERE table_schema = $1 AND table_name = $2 ORDER BY ordinal_position",
            &[&schema, &view],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// Whether the relation `name` (schema-qualified) exists.
async fn exists(client: &tokio_postgres::Client, name: &str) -> bool {
    client
        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&name])
        .await
        .unwrap()
        .get(0)
}

/// The one row of `view` with the columns `columns` (properties' own names, quoted here), as text.
async fn view_row(
    client: &tokio_postgres::Client,
    view: &str,
    columns: &[&str],
) -> Vec<Option<String>> {
    let list: Vec<String> = columns.iter().map(|c| quoted(c)).collect();
    let row = client
        .query_one(&format!("SELECT {} FROM {view}", list.join(", ")), &[])
        .await
        .unwrap();
    (0..columns.len()).map(|i| row.get(i)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_property_name_is_a_column_and_never_sql_even_with_standard_conforming_strings_off() {
    let Some(cluster) = testing::shared() else {
        return;
    };
    // The setting under which a `\'` in a plain '...' literal escapes the quote that would end
    // it: set before the store connects, so every connection of its pool has it.
    cluster.create_database("nonconforming").await;
    let url = cluster.url("nonconforming");
    let (client, connection) = tokio_postgres::connect(&url, NoTls).await.unwrap();
    tokio::spawn(connection);
    client
        .batch_execute(
            "ALTER DATABASE nonconforming SET standard_conforming_strings = off;
             ALTER DATABASE nonconforming SET escape_string_warning = off;
             CREATE SCHEMA hubspot; CREATE TABLE hubspot.x (a int)",
        )
        .await
        .unwrap();
    let store = PostgresStore::open(&PostgresConfig::new(&url))
        .await
        .unwrap();
    let (client, connection) = tokio_postgres::connect(&url, NoTls).await.unwrap();
    tokio::spawn(connection);
    let setting: String = client
        .query_one("SHOW standard_conforming_strings", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(setting, "off");
    let stream = StreamName::new("contacts").unwrap();
    store.put_stream(&contacts_entry(&stream)).await.unwrap();

    // The attack sorts after `email`, so that in a plain literal what it leaves after its `--`
    // is a comment and the statement parses as three: it is described first with `email` only.
    let attack = r"~\' AS z FROM hubspot.contacts;DROP TABLE hubspot.x;--";
    let first = [attack, "email"];
    let ascii = [
        attack,
        "email",
        r"back\slash",
        r"ends in \",
        "it's",
        r#"say "hi""#,
        "$$ dollar $$",
        "$tag$ x $tag$",
        "new\nline",
        "-- comment",
        "/* open",
    ];
    let unicode = ["ünïcødé ✓", "日本語\\'"];
    let mut properties = serde_json::Map::new();
    for (i, name) in ascii.iter().chain(&unicode).enumerate() {
        properties.insert((*name).into(), format!("v{i} '\\\" $$").into());
    }
    let record = serde_json::json!({ "properties": properties });
    Sink::commit(&store, &batch(&stream, 0, &[("1", 1, record)]))
        .await
        .unwrap();

    for names in [&first[..], &ascii[..], &[&ascii[..], &unicode[..]].concat()] {
        let schema = Schema::new(names.iter().map(|n| field(n, FieldKind::Text)));
        store.describe(&stream, &schema).await.unwrap();
        assert!(
            exists(&client, "hubspot.x").await,
            "a property name dropped a table"
        );
        let columns = view_columns(&client, "hubspot", "contacts_typed").await;
        let mut sorted: Vec<&str> = names.to_vec();
        sorted.sort_unstable();
        assert_eq!(
            columns[7..],
            sorted,
            "each property is a column of its name"
        );
        let got = view_row(&client, "hubspot.contacts_typed", &sorted).await;
        let want: Vec<Option<String>> = sorted
            .iter()
            .map(|n| properties[*n].as_str().map(String::from))
            .collect();
        assert_eq!(got, want, "each column reads its property's value");
    }
    let comment: String = client
        .query_one(
            "SELECT obj_description('hubspot.contacts_typed'::regclass, 'pg_class')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        comment.contains("source's property definitions"),
        "{comment}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn properties_named_like_the_views_own_columns_or_empty_each_get_a_column_of_their_own() {
    let Some((store, client)) = warehouse("collisions").await else {
        return;
    };
    let colliding = ["property_id", "", "id", "updated_at"];
    let record = serde_json::json!({"properties": {
        "property_id": "a", "": "b", "id": "c", "updated_at": "d", "email": "e"}});
    // A stream whose first schema collides, and one whose view was made before it did.
    let fresh = StreamName::new("fresh").unwrap();
    let older = StreamName::new("older").unwrap();
    store
        .describe(&older, &Schema::new([field("email", FieldKind::Text)]))
        .await
        .unwrap();
    let with_collisions = Schema::new(
        colliding
            .iter()
            .chain(&["email"])
            .map(|n| field(n, FieldKind::Text)),
    );
    for stream in [&fresh, &older] {
        Sink::commit(&store, &batch(stream, 0, &[("1", 1, record.clone())]))
            .await
            .unwrap();
        store.describe(stream, &with_collisions).await.unwrap();
        let view = format!("{stream}_typed");
        let columns = view_columns(&client, "weld_records", &view).await;
        assert_eq!(
            columns[7..],
            // By property name: "", "email", "id", "property_id", "updated_at".
            [
                "property_",
                "email",
                "property_id",
                "property_property_id",
                "property_updated_at",
            ],
            "{stream}"
        );
        let got = view_row(
            &client,
            &format!("weld_records.{view}"),
            &[
                "id",
                "property_",
                "property_id",
                "property_property_id",
                "property_updated_at",
                "email",
            ],
        )
        .await;
        let want = ["1", "b", "c", "a", "d", "e"].map(|v| Some(v.to_string()));
        assert_eq!(got, want, "{stream}");
    }
}
