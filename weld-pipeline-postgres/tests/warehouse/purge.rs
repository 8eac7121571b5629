//! A purge (a privacy deletion at the source) leaves no row of the record where SQL reads.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purged_record_has_no_row_in_the_table_its_typed_view_or_its_link_table() {
    let Some((store, client)) = warehouse("purge").await else {
        return;
    };
    let stream = StreamName::new("contacts").unwrap();
    store
        .describe(&stream, &Schema::new([field("email", FieldKind::Text)]))
        .await
        .unwrap();
    let linked = |id: &str| {
        serde_json::json!({"properties": {"email": format!("{id}@example.com")},
            "associations": {"companies": [{"id": format!("7{id}"), "types": [
                {"category": "HUBSPOT_DEFINED", "typeId": 279, "label": null}]}]}})
    };
    let first = batch(&stream, 0, &[("1", 1, linked("1")), ("2", 1, linked("2"))]);
    Sink::commit(&store, &first).await.unwrap();
    assert_eq!(
        rows_of(&client, "1").await,
        [1, 1, 1],
        "stored, typed and linked"
    );

    // Learned at 0, older than the stored version: a purge wins all the same.
    let purge = batch(&stream, 1, &[]).with_records(vec![Record::purge("1", Timestamp::EPOCH)]);
    Sink::commit(&store, &purge).await.unwrap();
    assert_eq!(
        rows_of(&client, "1").await,
        [0, 0, 0],
        "no trace of record 1"
    );
    assert_eq!(rows_of(&client, "2").await, [1, 1, 1], "record 2 untouched");
    let run = store.runs(&stream, 1).await.unwrap().remove(0);
    assert_eq!((run.records, run.purged), (3, 1));
    let purged: i64 = client
        .query_one(
            "SELECT purged FROM weld.batches WHERE stream = 'contacts' AND seq = 1",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(purged, 1, "the ledger row counts it");
}

/// The rows of record `id` in the stream's records table, its typed view and its link table.
async fn rows_of(client: &tokio_postgres::Client, id: &str) -> [i64; 3] {
    let mut counts = [0; 3];
    let relations = [
        "weld_records.contacts",
        "weld_records.contacts_typed",
        "weld_records.contacts_associations",
    ];
    for (count, relation) in counts.iter_mut().zip(relations) {
        let column = if relation.ends_with("_associations") {
            "from_id"
        } else {
            "id"
        };
        *count = client
            .query_one(
                &format!("SELECT count(*) FROM {relation} WHERE {column} = $1"),
                &[&id],
            )
            .await
            .unwrap()
            .get(0);
    }
    counts
}
