//! The fake itself, over HTTP: its search answers HubSpot's `total` exactly, on its quick path
//! too (a search only "after this id" counts the live records past it from an index that every
//! change drops), and it serves HubSpot's legacy paths and its dated ones with one
//! implementation, the legacy ones retired on demand.

use std::time::Duration;

use serde_json::{json, Value};
use weld_pipeline_hubspot::fake::{FakeConfig, FakeHubSpot, Fault, FaultPlan, Legacy, Mutation};

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

/// Every HTTP exchange of these tests ends within this.
const DEADLINE: Duration = Duration::from_secs(30);

/// `GET base+path` with `token`: the status and the JSON body (`null` when there is none).
async fn get_as(fake: &FakeHubSpot, path: &str, token: &str) -> (u16, Value) {
    let request = reqwest::Client::new()
        .get(format!("{}{path}", fake.base_url()))
        .bearer_auth(token)
        .send();
    read(request).await
}

async fn get(fake: &FakeHubSpot, path: &str) -> (u16, Value) {
    get_as(fake, path, "fake-token").await
}

async fn post(fake: &FakeHubSpot, path: &str, body: &Value) -> (u16, Value) {
    let request = reqwest::Client::new()
        .post(format!("{}{path}", fake.base_url()))
        .bearer_auth("fake-token")
        .json(body)
        .send();
    read(request).await
}

async fn read(
    request: impl std::future::Future<Output = reqwest::Result<reqwest::Response>>,
) -> (u16, Value) {
    tokio::time::timeout(DEADLINE, async {
        let response = request.await.unwrap();
        let status = response.status().as_u16();
        let body = response.bytes().await.unwrap();
        (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
    })
    .await
    .expect("the fake answers within the deadline")
}

async fn small_fake(config: FakeConfig) -> FakeHubSpot {
    FakeHubSpot::start(
        "127.0.0.1:0",
        FakeConfig {
            custom_properties: 5,
            search_per_second: None,
            ..config
        },
    )
    .await
    .unwrap()
}

/// The results of an answer with `url` taken out of each, and whether every one had a `url`.
fn without_urls(answer: &Value) -> (Vec<Value>, bool) {
    let mut all_had = true;
    let results = answer["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| {
            let mut r = r.clone();
            all_had &= r.as_object_mut().unwrap().remove("url").is_some();
            r
        })
        .collect();
    (results, all_had)
}

#[tokio::test]
async fn the_legacy_paths_answer_410_when_retired_and_are_counted() {
    let fake = small_fake(FakeConfig {
        contacts: 50,
        legacy: Legacy::Retired,
        ..FakeConfig::default()
    })
    .await;
    let legacy_calls = [
        "/crm/v3/objects/contacts?limit=5",
        "/crm/v3/objects/contacts/1",
        "/crm/v3/properties/contacts",
        "/crm/v3/owners",
        "/crm/v3/pipelines/deals",
        "/crm/v3/schemas",
        "/crm/v4/objects/contacts/1/associations/companies",
        "/crm/associations/v4/contacts/companies/labels",
    ];
    for path in legacy_calls {
        let (status, body) = get(&fake, path).await;
        assert_eq!(status, 410, "{path}");
        assert_eq!(body["category"], "API_VERSION_UNSUPPORTED", "{path}");
        assert!(body["correlationId"].is_string(), "{path}: {body}");
        assert!(body["links"].is_object(), "{path}: {body}");
    }
    let (status, _) = post(
        &fake,
        "/crm/v4/associations/contacts/companies/batch/read",
        &json!({"inputs": [{"id": "1"}]}),
    )
    .await;
    assert_eq!(status, 410);
    // Retired even without a token: the path is gone, whoever asks.
    let (status, _) = get_as(&fake, "/crm/v3/objects/contacts", "wrong").await;
    assert_eq!(status, 410);

    let (status, body) = get(&fake, "/crm/objects/2026-03/contacts?limit=5").await;
    assert_eq!(status, 200);
    assert_eq!(body["results"].as_array().unwrap().len(), 5);

    let stats = fake.stats();
    assert_eq!(stats.legacy_requests, legacy_calls.len() as u64 + 2);
    assert_eq!(stats.dated_requests, 1);
    assert_eq!(
        stats.by_status.get(&410),
        Some(&(legacy_calls.len() as u64 + 2))
    );

    // Served again at run time, as the admin route says.
    let (status, _) = post(&fake, "/_admin/legacy", &json!({"retired": false})).await;
    assert_eq!(status, 204);
    assert_eq!(get(&fake, "/crm/v3/objects/contacts?limit=5").await.0, 200);
    let (status, _) = post(&fake, "/_admin/legacy", &json!({"retired": true})).await;
    assert_eq!(status, 204);
    assert_eq!(get(&fake, "/crm/v3/objects/contacts?limit=5").await.0, 410);
}

#[tokio::test]
async fn both_families_serve_the_same_records_but_for_dated_urls() {
    let fake = small_fake(FakeConfig {
        contacts: 250,
        ..FakeConfig::default()
    })
    .await;
    let query = "?limit=100&properties=email,firstname,custom_property_001";
    let mut after = String::new();
    let mut pages = 0;
    loop {
        let (legacy_status, legacy) =
            get(&fake, &format!("/crm/v3/objects/contacts{query}{after}")).await;
        let (dated_status, dated) = get(
            &fake,
            &format!("/crm/objects/2026-03/contacts{query}{after}"),
        )
        .await;
        assert_eq!((legacy_status, dated_status), (200, 200));
        let (legacy_records, legacy_urls) = without_urls(&legacy);
        let (dated_records, dated_urls) = without_urls(&dated);
        assert!(
            !legacy_urls || legacy_records.is_empty(),
            "v3 records carry no url"
        );
        assert!(dated_urls, "every dated record carries its url");
        assert_eq!(legacy_records, dated_records);
        assert_eq!(
            legacy["paging"]["next"]["after"],
            dated["paging"]["next"]["after"]
        );
        pages += 1;
        match dated["paging"]["next"]["after"].as_str() {
            Some(next) => {
                assert!(dated["paging"]["next"]["link"]
                    .as_str()
                    .unwrap()
                    .starts_with("https://api.hubapi.com/crm/objects/2026-03/contacts?after="));
                after = format!("&after={next}");
            }
            None => break,
        }
    }
    assert_eq!(pages, 3);

    let first = get(&fake, "/crm/objects/2026-03/contacts?limit=3").await.1;
    let url = first["results"][0]["url"].as_str().unwrap();
    let id = first["results"][0]["id"].as_str().unwrap();
    assert_eq!(
        url,
        format!("https://app.hubspot.com/contacts/1234567/record/0-1/{id}")
    );

    let ids: Vec<Value> = first["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| json!({"id": r["id"]}))
        .chain([json!({"id": "999999999"})])
        .collect();
    // What HubSpot's 2026-03 SDK sends: `archived` in the query, `propertiesWithHistory` too.
    let body = json!({"inputs": ids, "properties": ["email"], "propertiesWithHistory": []});
    let (legacy_status, legacy) = post(
        &fake,
        "/crm/v3/objects/contacts/batch/read?archived=false",
        &body,
    )
    .await;
    let (dated_status, dated) = post(
        &fake,
        "/crm/objects/2026-03/contacts/batch/read?archived=false",
        &body,
    )
    .await;
    assert_eq!((legacy_status, dated_status), (207, 207));
    let (legacy_records, _) = without_urls(&legacy);
    let (dated_records, dated_urls) = without_urls(&dated);
    assert!(dated_urls);
    assert_eq!(legacy_records.len(), 3);
    assert_eq!(legacy_records, dated_records);
    assert_eq!(legacy["errors"], dated["errors"]);
    assert_eq!(dated["errors"][0]["category"], "OBJECT_NOT_FOUND");
    assert_eq!(
        fake.stats().legacy_requests,
        fake.stats().dated_requests - 1
    );
}

#[tokio::test]
async fn deals_are_served_under_their_object_type_id_0_3() {
    let fake = small_fake(FakeConfig {
        contacts: 30,
        deals: 40,
        ..FakeConfig::default()
    })
    .await;
    let (status, by_id) = get(&fake, "/crm/objects/2026-03/0-3?limit=100").await;
    assert_eq!(status, 200);
    let (_, by_name) = get(&fake, "/crm/objects/2026-03/deals?limit=100").await;
    assert_eq!(by_id["results"], by_name["results"]);
    assert_eq!(by_id["results"].as_array().unwrap().len(), 40);
    assert!(by_id["results"][0]["url"]
        .as_str()
        .unwrap()
        .contains("/record/0-3/"));
    let (status, pipelines) = get(&fake, "/crm/pipelines/2026-03/0-3").await;
    assert_eq!(status, 200);
    assert_eq!(pipelines["results"].as_array().unwrap().len(), 2);
    let (status, _) = get(&fake, "/crm/v3/objects/0-2?limit=1").await;
    assert_eq!(status, 200, "companies by 0-2 on v3 too");
}

#[tokio::test]
async fn one_records_links_page_at_500_in_each_familys_shape() {
    // 1,200 contacts over two companies: each company has about 600 links to contacts.
    let fake = small_fake(FakeConfig {
        contacts: 1_200,
        companies: 2,
        ..FakeConfig::default()
    })
    .await;
    let all = fake.associations("companies", "contacts");
    let (company, linked) = all.iter().next().unwrap();
    assert!(linked.len() > 500, "{} links", linked.len());
    for (path, text_ids) in [
        (
            format!("/crm/objects/2026-03/companies/{company}/associations/contacts"),
            true,
        ),
        (
            format!("/crm/v4/objects/companies/{company}/associations/contacts"),
            false,
        ),
    ] {
        let (status, first) = get(&fake, &path).await;
        assert_eq!(status, 200, "{path}");
        assert_eq!(first["results"].as_array().unwrap().len(), 500, "{path}");
        assert_eq!(first["paging"]["next"]["after"], "500", "{path}");
        let (status, second) = get(&fake, &format!("{path}?after=500&limit=500")).await;
        assert_eq!(status, 200);
        assert!(second.get("paging").is_none(), "{path}: the last page");
        let mut ids = Vec::new();
        for link in first["results"]
            .as_array()
            .unwrap()
            .iter()
            .chain(second["results"].as_array().unwrap())
        {
            let id = &link["toObjectId"];
            assert_eq!(id.is_string(), text_ids, "{path}: {link}");
            ids.push(match id {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            });
            assert_eq!(link["associationTypes"][0]["category"], "HUBSPOT_DEFINED");
            assert_eq!(link["associationTypes"][0]["typeId"], 280);
        }
        assert_eq!(&ids, linked, "{path}");
        let (status, body) = get(&fake, &format!("{path}?limit=501")).await;
        assert_eq!(
            (status, body["category"].as_str()),
            (400, Some("VALIDATION_ERROR"))
        );
    }
    let (status, none) = get(
        &fake,
        "/crm/objects/2026-03/companies/999999999/associations/contacts",
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(none["results"], json!([]));

    // The dated batch read writes `toObjectId` as text too, the v4 one as a number.
    let body = json!({"inputs": [{"id": company}]});
    let dated = post(
        &fake,
        "/crm/associations/2026-03/companies/contacts/batch/read",
        &body,
    )
    .await
    .1;
    let v4 = post(
        &fake,
        "/crm/v4/associations/companies/contacts/batch/read",
        &body,
    )
    .await
    .1;
    assert!(dated["results"][0]["to"][0]["toObjectId"].is_string());
    assert!(v4["results"][0]["to"][0]["toObjectId"].is_u64());
}

#[tokio::test]
async fn link_labels_are_served_alike_on_both_families() {
    let fake = small_fake(FakeConfig {
        contacts: 10,
        ..FakeConfig::default()
    })
    .await;
    let (status, dated) = get(&fake, "/crm/associations/2026-03/contacts/companies/labels").await;
    assert_eq!(status, 200);
    let (_, v4) = get(&fake, "/crm/associations/v4/contacts/companies/labels").await;
    assert_eq!(dated, v4);
    assert_eq!(
        dated["results"],
        json!([
            {"category": "HUBSPOT_DEFINED", "typeId": 279, "label": null},
            {"category": "HUBSPOT_DEFINED", "typeId": 1, "label": "Primary"},
        ])
    );
    let (_, deals) = get(&fake, "/crm/associations/2026-03/0-3/companies/labels").await;
    assert_eq!(deals["results"][0]["typeId"], 341);
    let (status, body) = get(&fake, "/crm/associations/2026-03/contacts/unicorns/labels").await;
    assert_eq!(
        (status, body["category"].as_str()),
        (404, Some("OBJECT_NOT_FOUND"))
    );
}

#[tokio::test]
async fn one_record_is_served_by_id_and_an_unknown_id_is_a_404() {
    let fake = small_fake(FakeConfig {
        contacts: 20,
        ..FakeConfig::default()
    })
    .await;
    let listed = get(
        &fake,
        "/crm/objects/2026-03/contacts?limit=1&properties=email",
    )
    .await
    .1;
    let id = listed["results"][0]["id"].as_str().unwrap().to_string();
    let (status, one) = get(
        &fake,
        &format!("/crm/objects/2026-03/contacts/{id}?properties=email"),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(one, listed["results"][0]);
    let (status, legacy) = get(
        &fake,
        &format!("/crm/v3/objects/contacts/{id}?properties=email"),
    )
    .await;
    assert_eq!(status, 200);
    assert!(legacy.get("url").is_none());
    assert_eq!(legacy["properties"], one["properties"]);

    let (status, missing) = get(&fake, "/crm/objects/2026-03/contacts/999999999").await;
    assert_eq!(status, 404);
    assert_eq!(missing["category"], "OBJECT_NOT_FOUND");
    assert!(missing["correlationId"].is_string());
    assert!(missing["links"].is_object());
    let (status, _) = get(
        &fake,
        &format!("/crm/objects/2026-03/contacts/{id}?archived=true"),
    )
    .await;
    assert_eq!(status, 404, "a live record is not found among the archived");
}

/// The keys of a JSON object, sorted.
fn keys(body: &Value) -> Vec<&str> {
    let mut keys: Vec<&str> = body
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    keys
}

#[tokio::test]
async fn dated_error_bodies_take_hubspots_current_shape_and_429s_keep_the_rate_limiters() {
    let fake = small_fake(FakeConfig {
        contacts: 10,
        forbidden: vec!["deals".into()],
        ..FakeConfig::default()
    })
    .await;
    let current = [
        "category",
        "context",
        "correlationId",
        "errors",
        "links",
        "message",
        "status",
    ];
    let (status, dated) = get_as(&fake, "/crm/objects/2026-03/contacts", "wrong").await;
    assert_eq!(status, 401);
    assert_eq!(keys(&dated), current);
    assert_eq!(dated["category"], "INVALID_AUTHENTICATION");
    let (status, legacy) = get_as(&fake, "/crm/v3/objects/contacts", "wrong").await;
    assert_eq!(status, 401);
    assert!(
        legacy.get("links").is_none(),
        "the v3 body as before: {legacy}"
    );

    let two_sorts = json!({"sorts": ["email", "firstname"], "limit": 10});
    let (status, bad) = post(&fake, "/crm/objects/2026-03/contacts/search", &two_sorts).await;
    assert_eq!(status, 400);
    assert_eq!(keys(&bad), current);
    assert_eq!(bad["category"], "VALIDATION_ERROR");

    let (status, forbidden) = get(&fake, "/crm/objects/2026-03/0-3").await;
    assert_eq!(status, 403, "deals are forbidden by their id too");
    assert_eq!(forbidden["category"], "MISSING_SCOPES");
    assert_eq!(
        forbidden["errors"][0]["context"]["requiredGranularScopes"],
        json!(["crm.objects.deals.read"])
    );

    fake.inject(FaultPlan {
        fault: Fault::RateLimited {
            retry_after: Some(1),
        },
        count: 1,
        only: None,
    });
    let (status, limited) = get(&fake, "/crm/objects/2026-03/contacts").await;
    assert_eq!(status, 429);
    assert_eq!(limited["errorType"], "RATE_LIMIT");
    assert_eq!(limited["policyName"], "TEN_SECONDLY_ROLLING");
    assert!(limited.get("category").is_none());
}

#[tokio::test]
async fn owners_and_stages_carry_what_hubspots_dated_sdk_requires_on_both_families() {
    let fake = small_fake(FakeConfig {
        contacts: 10,
        owners: 3,
        ..FakeConfig::default()
    })
    .await;
    for path in ["/crm/v3/owners", "/crm/owners/2026-03"] {
        for archived in [false, true] {
            let (status, owners) = get(&fake, &format!("{path}?archived={archived}")).await;
            assert_eq!(status, 200);
            for owner in owners["results"].as_array().unwrap() {
                assert_eq!(owner["type"], "PERSON", "{path}: {owner}");
                assert!(owner["userIdIncludingInactive"].is_u64(), "{path}: {owner}");
                assert_eq!(owner["userId"].is_u64(), !archived, "{path}: {owner}");
            }
        }
    }
    for path in [
        "/crm/v3/pipelines/tickets",
        "/crm/pipelines/2026-03/tickets",
    ] {
        let (_, pipelines) = get(&fake, path).await;
        for stage in pipelines["results"][0]["stages"].as_array().unwrap() {
            assert_eq!(stage["writePermissions"], "CRM_PERMISSIONS_ENFORCEMENT");
        }
    }
}
