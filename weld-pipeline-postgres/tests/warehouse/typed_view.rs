//! The typed view: each property a column of its type, cast safely, under any name.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_typed_view_casts_safely_changes_with_the_schema_and_goes_with_its_stream() {
    let Some((store, client)) = warehouse("typed").await else {
        return;
    };
    let stream = StreamName::new("deals").unwrap();
    describe_and_commit_a_value_of_every_kind(&store, &stream).await;
    each_value_reads_as_its_type_or_null(&client).await;
    a_changed_schema_makes_the_view_again(&store, &client, &stream).await;
    a_users_view_on_top_keeps_it_and_commits_go_on(&store, &client, &stream).await;

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

/// Describes `stream` with a field of every kind and commits values good, in epoch
/// milliseconds, bad, empty and of the wrong shape.
async fn describe_and_commit_a_value_of_every_kind(store: &PostgresStore, stream: &StreamName) {
    let schema = Schema::new([
        field("amount", FieldKind::Number),
        field("closed", FieldKind::Boolean),
        field("closedate", FieldKind::DateTime),
        field("birthday", FieldKind::Date),
        field("tags", FieldKind::List),
        field("id", FieldKind::Text),
    ]);
    store.describe(stream, &schema).await.unwrap();
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
        store,
        &batch(
            stream,
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
}

/// One bad value breaks no query: each value reads as its type, or as NULL.
async fn each_value_reads_as_its_type_or_null(client: &tokio_postgres::Client) {
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
}

/// A property added before the others and one removed: the view is made again.
async fn a_changed_schema_makes_the_view_again(
    store: &PostgresStore,
    client: &tokio_postgres::Client,
    stream: &StreamName,
) {
    let changed = Schema::new([
        field("aaa_first", FieldKind::Number),
        field("amount", FieldKind::Text),
    ]);
    store.describe(stream, &changed).await.unwrap();
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
}

/// A user's view on top of it keeps it as it is: describing says why, commits go on.
async fn a_users_view_on_top_keeps_it_and_commits_go_on(
    store: &PostgresStore,
    client: &tokio_postgres::Client,
    stream: &StreamName,
) {
    client
        .batch_execute("CREATE VIEW public.mine AS SELECT id, amount FROM weld_records.deals_typed")
        .await
        .unwrap();
    let error = store
        .describe(stream, &Schema::new([field("zzz", FieldKind::Text)]))
        .await
        .unwrap_err();
    assert!(
        error.to_string().contains("other objects depend on it"),
        "{error}"
    );
    let later = serde_json::json!({"properties": {"amount": "7"}});
    Sink::commit(store, &batch(stream, 1, &[("1", 2, later)]))
        .await
        .unwrap();
    let amount: Option<String> = client
        .query_one("SELECT amount FROM public.mine WHERE id = '1'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(amount.as_deref(), Some("7"));
    client.batch_execute("DROP VIEW public.mine").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_property_name_is_a_column_and_never_sql_even_with_standard_conforming_strings_off() {
    let Some((store, client)) = nonconforming_warehouse().await else {
        return;
    };
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

/// A database whose connections all have `standard_conforming_strings` off (and a table
/// `hubspot.x` an injection would drop), its store, and a client for a user's SQL.
async fn nonconforming_warehouse() -> Option<(PostgresStore, tokio_postgres::Client)> {
    let cluster = testing::shared()?;
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
    Some((store, client))
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
