//! Leases on a real throw-away PostgreSQL cluster: replicas claiming at once never share a
//! stream, a lease renews at its epoch, a lapsed one goes to another replica at the next
//! epoch and is lost to its old holder, a released one is free at once, a commit under way holds
//! off a claim and a release but not its holder's renewal, and a store fenced by a replica's
//! leases refuses its commits once the lease is another's.

use std::time::Duration;

use tokio::task::JoinHandle;

use tokio_postgres::NoTls;
use weld_pipeline::store::StreamStore;
use weld_pipeline::{
    Batch, Checkpoint, Commit, ErrorKind, Json, Record, RunId, Sink, StreamName, Timestamp,
};
use weld_pipeline_postgres::{testing, Holder, Lease, Leases, PostgresConfig, PostgresStore};

const TTL: Duration = Duration::from_secs(30);

async fn store(database: &str) -> Option<(PostgresStore, String)> {
    let cluster = testing::shared()?;
    cluster.create_database(database).await;
    let url = cluster.url(database);
    let store = PostgresStore::open(&PostgresConfig::new(&url))
        .await
        .unwrap();
    Some((store, url))
}

fn streams(n: usize) -> Vec<StreamName> {
    (0..n)
        .map(|i| StreamName::new(format!("s{i:02}")).unwrap())
        .collect()
}

/// A connection of the test's own to the database at `url`, and the task driving it (awaited
/// once the client is dropped).
async fn connect(
    url: &str,
) -> (
    tokio_postgres::Client,
    JoinHandle<Result<(), tokio_postgres::Error>>,
) {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await.unwrap();
    (client, tokio::spawn(connection))
}

/// Runs `sql` on the database at `url`: what a test does to the clock of a lease.
async fn sql(url: &str, sql: &str) {
    let (client, connection) = connect(url).await;
    client.batch_execute(sql).await.unwrap();
    drop(client);
    let _ = connection.await;
}

fn names(leases: &[Lease]) -> Vec<&str> {
    leases.iter().map(|l| l.stream.as_str()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_claiming_at_once_take_each_stream_once() {
    let Some((store, _)) = store("leases_at_once").await else {
        return;
    };
    let wanted = streams(40);
    let replicas: Vec<Leases> = (0..4)
        .map(|i| store.leases(format!("replica-{i}"), TTL))
        .collect();
    let claiming: Vec<_> = replicas
        .iter()
        .map(|leases| {
            let (leases, wanted) = (leases.clone(), wanted.clone());
            tokio::spawn(async move { leases.claim(&wanted, 15).await.unwrap() })
        })
        .collect();
    let mut claims = Vec::new();
    for claim in claiming {
        claims.push(claim.await.unwrap());
    }
    let mut taken: Vec<&str> = claims.iter().flat_map(|c| names(c)).collect();
    let claimed = taken.len();
    taken.sort_unstable();
    taken.dedup();
    assert_eq!(taken.len(), claimed, "no stream claimed twice: {claims:?}");
    assert_eq!(claimed, 40, "all 40 claimed, 15 at most each: {claims:?}");
    assert!(claims.iter().all(|c| c.len() <= 15));
    for lease in claims.iter().flatten() {
        assert_eq!(lease.epoch, 1, "a first claim is epoch 1: {lease:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lapsed_lease_goes_to_another_replica_at_the_next_epoch_and_is_lost_to_the_first() {
    let Some((store, url)) = store("leases_lapse").await else {
        return;
    };
    let (a, b) = (store.leases("a", TTL), store.leases("b", TTL));
    let wanted = streams(1);
    let s0 = &wanted[0];

    let held = a.claim(&wanted, 10).await.unwrap();
    assert_eq!(
        held,
        vec![Lease {
            stream: s0.clone(),
            epoch: 1
        }]
    );
    // Claimed again by its holder, or renewed: the same epoch.
    assert_eq!(a.claim(&wanted, 10).await.unwrap(), held);
    assert_eq!(a.renew().await.unwrap(), held);
    // Another replica finds it taken.
    assert!(b.claim(&wanted, 10).await.unwrap().is_empty());
    let (client, connection) = connect(&url).await;
    assert!(a.holds(&client, s0, 1).await.unwrap());
    assert!(!b.holds(&client, s0, 1).await.unwrap());

    // a freezes past its lease (its expiry moved into the past, as time would).
    sql(
        &url,
        "UPDATE weld.leases SET expires_at = now() - interval '1 second'",
    )
    .await;
    assert_eq!(
        a.holder(s0).await.unwrap(),
        None,
        "a lapsed lease has no holder"
    );
    let taken = b.claim(&wanted, 10).await.unwrap();
    assert_eq!(
        taken,
        vec![Lease {
            stream: s0.clone(),
            epoch: 2
        }]
    );
    assert_eq!(
        b.holder(s0).await.unwrap(),
        Some(Holder {
            owner: "b".into(),
            epoch: 2,
            worker: None
        })
    );
    // a wakes: its renewal no longer includes the stream, and its epoch holds nothing.
    assert!(a.renew().await.unwrap().is_empty());
    assert!(!a.holds(&client, s0, 1).await.unwrap());
    assert!(!a.holds(&client, s0, 2).await.unwrap());
    assert!(b.holds(&client, s0, 2).await.unwrap());

    // b shuts down cleanly: the lease is free at once, and a takes it at the next epoch.
    assert_eq!(b.release_all().await.unwrap(), 1);
    assert_eq!(b.holder(s0).await.unwrap(), None);
    assert_eq!(
        a.claim(&wanted, 10).await.unwrap(),
        vec![Lease {
            stream: s0.clone(),
            epoch: 3
        }]
    );
    drop(client);
    let _ = connection.await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_check_under_way_keeps_the_lease_where_it_is_until_its_transaction_ends() {
    let Some((store, url)) = store("leases_share").await else {
        return;
    };
    // A lease of 3 s, checked at once after its claim: the check cannot come too late.
    let lapse = Duration::from_secs(3);
    let (a, b) = (store.leases("a", lapse), store.leases("b", TTL));
    let wanted = streams(1);
    assert_eq!(a.claim(&wanted, 1).await.unwrap().len(), 1);
    let (mut client, connection) = connect(&url).await;
    // a commits on the lease's behalf: its check locks the lease row until the commit.
    let transaction = client.transaction().await.unwrap();
    assert!(a.holds(&transaction, &wanted[0], 1).await.unwrap());
    // Meanwhile the lease lapses: b's claim skips the locked row instead of taking it.
    // (The database's clock, which no test can pause.)
    tokio::time::sleep(lapse + Duration::from_millis(500)).await;
    assert!(b.claim(&wanted, 1).await.unwrap().is_empty());
    transaction.commit().await.unwrap();
    // Once a's transaction ends, b takes the lapsed lease.
    assert_eq!(b.claim(&wanted, 1).await.unwrap()[0].epoch, 2);
    drop(client);
    let _ = connection.await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_check_under_way_does_not_hold_up_its_holders_renewal_but_does_its_release() {
    let Some((store, url)) = store("leases_key_share").await else {
        return;
    };
    let (a, b) = (store.leases("a", TTL), store.leases("b", TTL));
    let wanted = streams(1);
    assert_eq!(a.claim(&wanted, 1).await.unwrap().len(), 1);
    let (mut client, connection) = connect(&url).await;
    // a commits on the lease's behalf, one commit after another, as an ingesting stream does:
    // its check locks the lease row until the commit.
    let transaction = client.transaction().await.unwrap();
    assert!(a.holds(&transaction, &wanted[0], 1).await.unwrap());
    // Meanwhile a renews its lease and names its worker without waiting for that commit (under
    // a plain share lock each waited until the transaction ended).
    let prompt = Duration::from_secs(5);
    let renewed = tokio::time::timeout(prompt, a.renew())
        .await
        .expect("the renewal waited for the commit under way")
        .unwrap();
    assert_eq!((names(&renewed), renewed[0].epoch), (vec!["s00"], 1));
    tokio::time::timeout(prompt, a.run_on(&wanted[0], Some("w1")))
        .await
        .expect("naming the worker waited for the commit under way")
        .unwrap();
    // Its release waits for the commit: once a stream is given up, no commit of its old holder
    // can still land. Nor can b take it meanwhile.
    let release = tokio::spawn({
        let (a, stream) = (a.clone(), wanted[0].clone());
        async move { a.release(&stream).await }
    });
    assert!(b.claim(&wanted, 1).await.unwrap().is_empty());
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !release.is_finished(),
        "the release did not wait for the commit"
    );
    transaction.commit().await.unwrap();
    tokio::time::timeout(prompt, release)
        .await
        .expect("the release went on waiting after the commit")
        .unwrap()
        .unwrap();
    assert_eq!(b.claim(&wanted, 1).await.unwrap()[0].epoch, 2);
    drop(client);
    let _ = connection.await;
}

fn batch(stream: &StreamName, seq: u64, ids: std::ops::Range<u32>) -> Batch {
    Batch::new(stream.clone(), RunId(7), seq)
        .with_records(
            ids.map(|id| {
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
async fn a_replica_that_lost_its_lease_commits_nothing_and_moves_no_checkpoint() {
    let Some((store, url)) = store("leases_fence").await else {
        return;
    };
    let (a, b) = (store.leases("a", TTL), store.leases("b", TTL));
    let (on_a, on_b) = (store.fenced_by(&a), store.fenced_by(&b));
    let wanted = streams(2);
    let (s0, s1) = (&wanted[0], &wanted[1]);
    assert_eq!(a.claim(&wanted[..1], 1).await.unwrap().len(), 1);

    // a holds s0: its commit goes in. s1 is nobody's: refused.
    assert!(matches!(
        on_a.commit(&batch(s0, 0, 0..10)).await.unwrap(),
        Commit::Stored { records: 10 }
    ));
    assert!(on_a.commit(&batch(s1, 0, 0..10)).await.is_err());
    assert_eq!(a.refused_commits(), 1);

    // a freezes past its lease; b takes it (epoch 2). a wakes, still believing in epoch 1.
    sql(
        &url,
        "UPDATE weld.leases SET expires_at = now() - interval '1 second'",
    )
    .await;
    assert_eq!(b.claim(&wanted[..1], 1).await.unwrap()[0].epoch, 2);
    let error = on_a.commit(&batch(s0, 1, 10..20)).await.unwrap_err();
    assert!(
        matches!(error, weld_pipeline::Error::NotLeased(_)),
        "{error}"
    );
    assert_eq!(error.kind(), ErrorKind::Transient, "{error}");
    assert_eq!(a.refused_commits(), 2);
    assert_eq!(
        store.counts(s0).await.unwrap().live,
        10,
        "nothing of it written"
    );
    assert_eq!(
        store.checkpoint(s0).await.unwrap(),
        Checkpoint::from_bytes(b"after-0".to_vec()),
        "the checkpoint did not move"
    );
    // The same batch, delivered again where the lease is, goes in.
    assert!(matches!(
        on_b.commit(&batch(s0, 1, 10..20)).await.unwrap(),
        Commit::Stored { records: 10 }
    ));
    assert_eq!(store.counts(s0).await.unwrap().live, 20);
    assert_eq!(b.refused_commits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_names_its_worker_gives_up_one_stream_alone_and_replicas_see_each_other() {
    let Some((store, _)) = store("leases_one").await else {
        return;
    };
    let (a, b) = (store.leases("a", TTL), store.leases("b", TTL));
    let wanted = streams(2);
    let (s0, s1) = (&wanted[0], &wanted[1]);
    assert_eq!(a.claim(&wanted, 10).await.unwrap().len(), 2);
    a.run_on(s0, Some("w1")).await.unwrap();
    // Only the holder records a worker.
    b.run_on(s1, Some("w9")).await.unwrap();
    let holders = b.holders().await.unwrap();
    assert_eq!(holders.len(), 2);
    assert_eq!(holders[s0].worker.as_deref(), Some("w1"));
    assert_eq!(holders[s1].worker, None);
    assert_eq!(holders[s1].owner, "a");

    a.release(s0).await.unwrap();
    assert!(!weld_pipeline::lease::Leasing::is_held(&a, s0));
    assert!(weld_pipeline::lease::Leasing::is_held(&a, s1));
    assert_eq!(a.holder(s0).await.unwrap(), None);
    let taken = b.claim(&wanted, 10).await.unwrap();
    assert_eq!(
        taken,
        vec![Lease {
            stream: s0.clone(),
            epoch: 2
        }],
        "the stream given up goes at the next epoch, the other stays a's"
    );
    assert_eq!(b.holder(s0).await.unwrap().unwrap().worker, None);

    // Heartbeats: each replica sees every one alive with its workers; one shut down is gone.
    a.heartbeat(2).await.unwrap();
    let alive = b.heartbeat(1).await.unwrap();
    let alive: Vec<(&str, usize)> = alive.iter().map(|r| (r.id.as_str(), r.workers)).collect();
    assert_eq!(alive, [("a", 2), ("b", 1)]);
    a.release_all().await.unwrap();
    assert_eq!(b.heartbeat(1).await.unwrap().len(), 1);
}
