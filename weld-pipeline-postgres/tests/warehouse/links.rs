//! The association link table follows every write of a record's associations.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_link_table_follows_every_write_of_a_records_associations() {
    let Some((store, client)) = warehouse("links").await else {
        return;
    };
    let stream = StreamName::new("contacts").unwrap();
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
        links(&client).await,
        [
            "1>companies:10/1",
            "1>companies:11/279",
            "1>deals:20/4",
            "2>companies:10/1"
        ]
    );
    later_versions_replace_links_and_a_replay_moves_none(&store, &client, &stream).await;
}

/// A newer version replaces a record's links; an older one changes nothing; an amendment keeps
/// the links of the document it amends; a version without associations has none; a replay
/// moves nothing.
async fn later_versions_replace_links_and_a_replay_moves_none(
    store: &PostgresStore,
    client: &tokio_postgres::Client,
    stream: &StreamName,
) {
    Sink::commit(
        store,
        &batch(
            stream,
            2,
            &[
                ("1", 2, with(vec![link("12", 1)], vec![])),
                ("2", 0, with(vec![], vec![])),
            ],
        ),
    )
    .await
    .unwrap();
    assert_eq!(
        links(client).await,
        ["1>companies:12/1", "2>companies:10/1"]
    );
    // An amendment (a merge) keeps the links of the document it amends.
    let mut merged = batch(
        stream,
        3,
        &[(
            "2",
            5,
            serde_json::json!({"archived": true, "merged_into": "1"}),
        )],
    );
    merged.records[0].archived = true;
    merged.records[0].amend = true;
    Sink::commit(store, &merged).await.unwrap();
    assert_eq!(
        links(client).await,
        ["1>companies:12/1", "2>companies:10/1"]
    );
    // A version without associations (the stream no longer asks for them) has none.
    Sink::commit(
        store,
        &batch(
            stream,
            4,
            &[("1", 3, serde_json::json!({"properties": {}}))],
        ),
    )
    .await
    .unwrap();
    assert_eq!(links(client).await, ["2>companies:10/1"]);
    // Replayed: nothing moves.
    Sink::commit(
        store,
        &batch(stream, 1, &[("1", 1, with(vec![link("10", 1)], vec![]))]),
    )
    .await
    .unwrap();
    assert_eq!(links(client).await, ["2>companies:10/1"]);
}

/// A link to `id` of HubSpot's type `type_id`, as a record's `associations` carries it.
fn link(id: &str, type_id: u32) -> serde_json::Value {
    serde_json::json!({"id": id, "types": [
        {"category": "HUBSPOT_DEFINED", "typeId": type_id, "label": null}]})
}

/// A document with links to `companies` and `deals`.
fn with(companies: Vec<serde_json::Value>, deals: Vec<serde_json::Value>) -> serde_json::Value {
    serde_json::json!({"properties": {}, "associations": {"companies": companies, "deals": deals}})
}

/// The link table's rows, each as `from>to_type:to_id/type_id`, in order.
async fn links(client: &tokio_postgres::Client) -> Vec<String> {
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
}
