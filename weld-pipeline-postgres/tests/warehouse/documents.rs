//! A document is kept as it came; an older `jsonb` table is migrated to it.

use super::*;

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

    // A database of the version before 7: both tables' documents in `jsonb`, one of them read
    // by a view of the user's own, under which the column's type cannot change; and without
    // what the versions after 7 add.
    drop(store);
    client
        .batch_execute(&format!(
            "ALTER TABLE {plain_table} ALTER COLUMN data TYPE jsonb USING data::jsonb;
             ALTER TABLE {viewed_table} ALTER COLUMN data TYPE jsonb USING data::jsonb;
             CREATE VIEW public.mine AS SELECT data -> 'zeta' AS zeta FROM {viewed_table};
             ALTER TABLE weld.batches DROP COLUMN purged;
             ALTER TABLE weld.runs DROP COLUMN folded_purged, DROP COLUMN summed_purged;
             DELETE FROM weld.migrations WHERE version >= 7;"
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
