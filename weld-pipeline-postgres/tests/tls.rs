//! TLS to the database: with `sslmode=require` the store talks to a server whose certificate a
//! private authority signed only when told to trust that authority, and never falls back to a
//! plain connection; without it, it connects plain.

use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use tokio_postgres::NoTls;
use weld_pipeline::store::StreamStore;
use weld_pipeline::{ErrorKind, StreamName};
use weld_pipeline_postgres::testing::TestCluster;
use weld_pipeline_postgres::{PostgresConfig, PostgresStore};

/// A private certificate authority, and a certificate it signed for 127.0.0.1 with its key.
fn authority_and_server() -> (String, String, String) {
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let server = CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    (ca.pem(), server.pem(), key.serialize_pem())
}

/// How many of the store's connections the server sees, and how many of them use TLS.
async fn connections(url: &str) -> (i64, i64) {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await.unwrap();
    let connection = tokio::spawn(connection);
    let row = client
        .query_one(
            "SELECT count(*), count(*) FILTER (WHERE s.ssl)
             FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid)
             WHERE a.application_name = 'weld-pipeline'",
            &[],
        )
        .await
        .unwrap();
    drop(client);
    let _ = connection.await;
    (row.get(0), row.get(1))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sslmode_require_verifies_the_server_and_never_falls_back_to_plain() {
    let (ca, certificate, key) = authority_and_server();
    let Some(cluster) = TestCluster::start_with_tls(&certificate, &key) else {
        return;
    };
    cluster.create_database("tls").await;
    let plain_url = cluster.url("tls");
    let tls_url = format!("{plain_url}?sslmode=require");
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca).unwrap();
    let stream = StreamName::new("contacts").unwrap();

    // Trusting the authority: every connection is TLS.
    let config = PostgresConfig {
        ca_file: Some(ca_file.clone()),
        ..PostgresConfig::new(&tls_url)
    };
    let store = PostgresStore::open(&config).await.unwrap();
    store.resync(&stream).await.unwrap();
    let (count, encrypted) = connections(&plain_url).await;
    assert!(
        count >= 1 && encrypted == count,
        "{encrypted} of {count} over TLS"
    );
    drop(store);

    // Not trusting it: refused, and not retried in plain text.
    let mut untrusting = PostgresConfig::new(&tls_url);
    untrusting.connect_timeout = Duration::from_secs(5);
    let error = PostgresStore::open(&untrusting).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Transient, "{error}");
    assert!(
        error.to_string().to_lowercase().contains("certificate"),
        "{error}"
    );

    // A CA file that holds no certificate is a configuration error, said at once.
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate").unwrap();
    let error = PostgresStore::new(&PostgresConfig {
        ca_file: Some(garbage),
        ..PostgresConfig::new(&tls_url)
    })
    .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Permanent, "{error}");
    assert!(error.to_string().contains("garbage.pem"), "{error}");

    // Without sslmode: plain, even though the server offers TLS.
    let store = PostgresStore::open(&PostgresConfig::new(&plain_url))
        .await
        .unwrap();
    store.resync(&stream).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (count, encrypted) = connections(&plain_url).await;
    assert!(
        count >= 1 && encrypted == 0,
        "{encrypted} of {count} over TLS"
    );
}
