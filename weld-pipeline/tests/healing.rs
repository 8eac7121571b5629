//! A healing store over real sled files: a failing store refuses writes at once, keeps serving
//! reads, heals by itself once its cause is gone, and loses nothing it acknowledged. The real
//! full disk (a tmpfs) is in the end-to-end tests; here the failure is injected under the store.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use weld_pipeline::store::{
    Archived, Counts, Healing, RecordPage, Resume, RunRecord, SledStore, SledStoreConfig,
    StoreHealth, StreamEntry, StreamStore,
};
use weld_pipeline::{
    Batch, Checkpoint, Commit, Error, ErrorKind, Json, Record, RunId, RunOutcome, Sink, StreamName,
    Timestamp,
};

/// The sled store, whose commits and probes fail like a full disk while `broken` is set.
#[derive(Debug)]
struct Breakable {
    store: SledStore,
    broken: Arc<AtomicBool>,
    commits: Arc<AtomicU64>,
}

impl Breakable {
    fn check(&self) -> Result<(), Error> {
        if self.broken.load(Ordering::SeqCst) {
            return Err(Error::new(
                ErrorKind::Transient,
                std::io::Error::from_raw_os_error(28),
            ));
        }
        Ok(())
    }
}

#[async_trait]
impl Sink for Breakable {
    async fn commit(&self, batch: &Batch) -> Result<Commit, Error> {
        self.commits.fetch_add(1, Ordering::SeqCst);
        self.check()?;
        Sink::commit(&self.store, batch).await
    }
    async fn checkpoint(&self, stream: &StreamName) -> Result<Checkpoint, Error> {
        Sink::checkpoint(&self.store, stream).await
    }
}

#[async_trait]
impl StreamStore for Breakable {
    async fn stream(&self, name: &StreamName) -> Result<Option<StreamEntry>, Error> {
        StreamStore::stream(&self.store, name).await
    }
    async fn streams(&self) -> Result<Vec<StreamEntry>, Error> {
        StreamStore::streams(&self.store).await
    }
    async fn put_stream(&self, entry: &StreamEntry) -> Result<(), Error> {
        self.check()?;
        StreamStore::put_stream(&self.store, entry).await
    }
    async fn delete_stream(&self, name: &StreamName) -> Result<(), Error> {
        StreamStore::delete_stream(&self.store, name).await
    }
    async fn resume(&self, stream: &StreamName) -> Result<Resume, Error> {
        StreamStore::resume(&self.store, stream).await
    }
    async fn resync(&self, stream: &StreamName) -> Result<u64, Error> {
        self.check()?;
        StreamStore::resync(&self.store, stream).await
    }
    async fn counts(&self, stream: &StreamName) -> Result<Counts, Error> {
        StreamStore::counts(&self.store, stream).await
    }
    async fn records(
        &self,
        stream: &StreamName,
        after: Option<&str>,
        limit: usize,
        archived: Archived,
    ) -> Result<RecordPage, Error> {
        StreamStore::records(&self.store, stream, after, limit, archived).await
    }
    async fn runs(&self, stream: &StreamName, limit: usize) -> Result<Vec<RunRecord>, Error> {
        StreamStore::runs(&self.store, stream, limit).await
    }
    async fn start_run(
        &self,
        stream: &StreamName,
        run_id: RunId,
        at: Timestamp,
    ) -> Result<(), Error> {
        StreamStore::start_run(&self.store, stream, run_id, at).await
    }
    async fn finish_run(
        &self,
        stream: &StreamName,
        run_id: RunId,
        outcome: &RunOutcome,
    ) -> Result<(), Error> {
        StreamStore::finish_run(&self.store, stream, run_id, outcome).await
    }
    async fn sync(&self) -> Result<(), Error> {
        StreamStore::sync(&self.store).await
    }
    async fn probe(&self) -> Result<(), Error> {
        self.check()?;
        StreamStore::probe(&self.store).await
    }
}

fn stream() -> StreamName {
    StreamName::new("contacts").unwrap()
}

fn batch(seq: u64) -> Batch {
    Batch::new(stream(), RunId(7), seq)
        .with_records(
            (0..10)
                .map(|i| {
                    let id = seq * 10 + i;
                    Record {
                        id: id.to_string(),
                        updated_at: Timestamp::from_millis(1),
                        archived: false,
                        amend: false,
                        purge: false,
                        data: Json::parse(format!(r#"{{"id":"{id}"}}"#).into_bytes()).unwrap(),
                    }
                })
                .collect(),
        )
        .with_cursor(Checkpoint::from_bytes(format!("c{seq}")))
}

async fn wait_for_health(store: &Healing, healthy: bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while (store.health() == StoreHealth::Ok) != healthy {
        assert!(
            tokio::time::Instant::now() < deadline,
            "health never became {healthy}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_store_refuses_writes_serves_reads_heals_and_keeps_what_it_acked() {
    let dir = tempfile::tempdir().unwrap();
    let broken = Arc::new(AtomicBool::new(false));
    let commits = Arc::new(AtomicU64::new(0));
    let opens = Arc::new(AtomicU64::new(0));
    let opener = {
        let (path, broken, commits, opens) = (
            dir.path().to_owned(),
            broken.clone(),
            commits.clone(),
            opens.clone(),
        );
        move || {
            opens.fetch_add(1, Ordering::SeqCst);
            let store = SledStore::open(&SledStoreConfig::new(&path))?;
            Ok(Arc::new(Breakable {
                store,
                broken: broken.clone(),
                commits: commits.clone(),
            }) as Arc<dyn StreamStore>)
        }
    };
    let store = Healing::open(opener)
        .unwrap()
        .with_backoff(Duration::from_millis(10), Duration::from_millis(50));

    assert_eq!(
        store.commit(&batch(0)).await.unwrap(),
        Commit::Stored { records: 10 }
    );
    broken.store(true, Ordering::SeqCst);
    let error = store.commit(&batch(1)).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Transient);
    let StoreHealth::Failed { reason, .. } = store.health() else {
        panic!("the store did not fail");
    };
    assert!(reason.contains("No space left on device"), "{reason}");

    // While failed: writes are refused without reaching the store, reads are served.
    let reached = commits.load(Ordering::SeqCst);
    let refused = store.commit(&batch(2)).await.unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::Transient);
    assert!(refused.to_string().contains("healing"), "{refused}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        commits.load(Ordering::SeqCst),
        reached,
        "no write reached the failed store"
    );
    assert_eq!(store.counts(&stream()).await.unwrap().live, 10);
    assert!(
        opens.load(Ordering::SeqCst) > 2,
        "it keeps trying to reopen"
    );
    assert!(
        store.health() != StoreHealth::Ok,
        "it stays failed while the cause lasts"
    );

    // The cause goes: it heals by itself, and what it acknowledged is there.
    broken.store(false, Ordering::SeqCst);
    wait_for_health(&store, true).await;
    assert_eq!(store.commit(&batch(0)).await.unwrap(), Commit::Replayed);
    assert_eq!(
        store.commit(&batch(1)).await.unwrap(),
        Commit::Stored { records: 10 }
    );
    assert_eq!(store.counts(&stream()).await.unwrap().live, 20);
    assert_eq!(
        store.checkpoint(&stream()).await.unwrap(),
        Checkpoint::from_bytes("c1")
    );
}

/// The healing wrapper passes the whole storage conformance suite over sled.
mod conformance {
    use std::sync::Arc;

    use async_trait::async_trait;
    use weld_pipeline::store::{Healing, SledStore, SledStoreConfig, StreamStore};
    use weld_pipeline::testing::stores::StoreUnderTest;

    struct HealingSled {
        dir: tempfile::TempDir,
    }

    impl HealingSled {
        fn new() -> Self {
            HealingSled {
                dir: tempfile::tempdir().unwrap(),
            }
        }
    }

    #[async_trait]
    impl StoreUnderTest for HealingSled {
        async fn open(&self) -> Arc<dyn StreamStore> {
            let path = self.dir.path().to_owned();
            let store = Healing::open(move || {
                Ok(Arc::new(SledStore::open(&SledStoreConfig::new(&path))?)
                    as Arc<dyn StreamStore>)
            })
            .unwrap();
            Arc::new(store)
        }
    }

    weld_pipeline::store_conformance!(HealingSled::new());
}
