//! The fake's search answers HubSpot's `total` exactly, on its quick path too: a search only
//! "after this id" counts the live records past it from an index that every change drops.

use weld_pipeline_hubspot::fake::{FakeConfig, FakeHubSpot, Mutation};

async fn total_after(http: &reqwest::Client, fake: &FakeHubSpot, id: u64) -> (u64, Vec<u64>) {
    let body = serde_json::json!({
        "filterGroups": [{"filters": [
            {"propertyName": "hs_object_id", "operator": "GT", "value": id.to_string()}
        ]}],
        "sorts": [{"propertyName": "hs_object_id", "direction": "ASCENDING"}],
        "properties": ["hs_object_id"],
        "limit": 200,
    });
    let answer: serde_json::Value = http
        .post(format!(
            "{}/crm/v3/objects/contacts/search",
            fake.base_url()
        ))
        .bearer_auth("fake-token")
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids = answer["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().parse().unwrap())
        .collect();
    (answer["total"].as_u64().unwrap(), ids)
}

fn live_after(fake: &FakeHubSpot, id: u64) -> Vec<u64> {
    fake.dump("contacts")
        .into_iter()
        .filter(|r| !r.archived)
        .map(|r| r.id.parse().unwrap())
        .filter(|&i| i > id)
        .collect()
}

#[tokio::test]
async fn search_totals_after_an_id_count_the_live_records_past_it_through_every_change() {
    let fake = FakeHubSpot::start(
        "127.0.0.1:0",
        FakeConfig {
            contacts: 1_000,
            custom_properties: 0,
            search_per_second: None,
            ..FakeConfig::default()
        },
    )
    .await
    .unwrap();
    let http = reqwest::Client::new();
    let changes = [
        Mutation::default(),
        Mutation {
            archive: 40,
            ..Mutation::default()
        },
        Mutation {
            create: 25,
            delete: 10,
            merge: 5,
            ..Mutation::default()
        },
    ];
    for change in changes {
        fake.mutate(&Mutation {
            object: "contacts".into(),
            ..change
        });
        for id in [0, 1, 250, 999, 1_010, 5_000] {
            let live = live_after(&fake, id);
            let (total, ids) = total_after(&http, &fake, id).await;
            assert_eq!(total, live.len() as u64, "the total after {id}");
            assert_eq!(
                ids,
                live.iter().copied().take(200).collect::<Vec<_>>(),
                "the page after {id}"
            );
        }
    }
}
