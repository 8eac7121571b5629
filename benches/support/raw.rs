//! The raw baselines the pipeline is measured against, shared by the benches and the
//! `throughput` example: a length-delimited socket moving the same bytes the same way, sled's
//! `apply_batch` + `flush` (+ `fdatasync`), and PostgreSQL's multi-row `INSERT ... ON
//! CONFLICT`, each of the same records.

// Each user compiles this module on its own and uses a part of it.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::codec::{Framed, LengthDelimitedCodec};
use weld_pipeline::Batch;

fn codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .max_frame_length(16 << 20)
        .new_codec()
}

/// A raw length-delimited connection to a server on 127.0.0.1 that answers each frame with a
/// 10-byte frame: the floor of what any framed request/response protocol can do here.
pub(crate) struct RawSocket {
    sink: Arc<
        tokio::sync::Mutex<
            futures::stream::SplitSink<Framed<TcpStream, LengthDelimitedCodec>, Bytes>,
        >,
    >,
    stream: Arc<
        tokio::sync::Mutex<futures::stream::SplitStream<Framed<TcpStream, LengthDelimitedCodec>>>,
    >,
}

impl RawSocket {
    /// Starts the answering server and connects to it.
    pub(crate) async fn connect() -> RawSocket {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                socket.set_nodelay(true).expect("nodelay");
                tokio::spawn(async move {
                    let mut framed = Framed::new(socket, codec());
                    let ack = Bytes::from_static(&[0u8; 10]);
                    while let Some(Ok(_frame)) = framed.next().await {
                        if framed.send(ack.clone()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        let socket = TcpStream::connect(addr).await.expect("connect");
        socket.set_nodelay(true).expect("nodelay");
        let (sink, stream) = Framed::new(socket, codec()).split();
        RawSocket {
            sink: Arc::new(tokio::sync::Mutex::new(sink)),
            stream: Arc::new(tokio::sync::Mutex::new(stream)),
        }
    }

    /// Sends `frame` `count` times, at most `in_flight` unanswered, and waits for every answer.
    pub(crate) async fn send_all(&self, frame: &Bytes, count: u64, in_flight: usize) -> Duration {
        let started = Instant::now();
        let window = Arc::new(Semaphore::new(in_flight));
        let sending = {
            let (window, sink) = (window.clone(), self.sink.clone());
            async move {
                let mut sink = sink.lock().await;
                for _ in 0..count {
                    window.acquire().await.expect("open").forget();
                    sink.send(frame.clone()).await.expect("send");
                }
            }
        };
        let receiving = async {
            let mut stream = self.stream.lock().await;
            for _ in 0..count {
                stream.next().await.expect("ack").expect("frame");
                window.add_permits(1);
            }
        };
        futures::join!(sending, receiving);
        started.elapsed()
    }
}

/// A sled database of its own in `dir`, written the raw way: each batch's records in one
/// `apply_batch`, then `flush`, then, when `durable`, `fdatasync` of sled's log file (sled's
/// flush alone uses `sync_file_range`, which does not make the data durable; the store adds
/// the `fdatasync`).
pub(crate) struct RawSled {
    db: sled::Db,
    log: std::fs::File,
    durable: bool,
}

impl RawSled {
    /// Opens it in `dir` (a directory of its own).
    pub(crate) fn open(dir: &std::path::Path, durable: bool) -> RawSled {
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(32 << 20)
            .open()
            .expect("sled");
        let log = std::fs::File::open(dir.join("db")).expect("sled's log file");
        RawSled { db, log, durable }
    }

    /// Writes one batch.
    pub(crate) fn write(&self, batch: &Batch) {
        let mut write = sled::Batch::default();
        for record in &batch.records {
            write.insert(record.id.as_bytes(), record.data.as_bytes());
        }
        self.db.apply_batch(write).expect("apply");
        self.db.flush().expect("flush");
        if self.durable {
            self.log.sync_data().expect("fdatasync");
        }
    }
}

/// The raw table [`postgres_upsert`] writes: the store's columns.
pub(crate) const POSTGRES_TABLE: &str =
    "CREATE TABLE IF NOT EXISTS raw (id text COLLATE \"C\" PRIMARY KEY,
    updated_at timestamptz NOT NULL, created_at timestamptz, archived boolean NOT NULL,
    archived_at timestamptz, properties jsonb, data json NOT NULL, run_id bigint NOT NULL,
    synced_at timestamptz NOT NULL)";

/// One transaction: the batch's rows in one multi-row upsert into [`POSTGRES_TABLE`].
pub(crate) async fn postgres_upsert(client: &tokio_postgres::Client, batch: &Batch) {
    let ids: Vec<&str> = batch.records.iter().map(|r| r.id.as_str()).collect();
    let times: Vec<i64> = batch
        .records
        .iter()
        .map(|r| r.updated_at.as_millis())
        .collect();
    let archived: Vec<bool> = batch.records.iter().map(|r| r.archived).collect();
    let data: Vec<&str> = batch
        .records
        .iter()
        .map(|r| std::str::from_utf8(r.data.as_bytes()).expect("UTF-8"))
        .collect();
    client.batch_execute("BEGIN").await.expect("begin");
    client
        .execute(
            "INSERT INTO raw (id, updated_at, created_at, archived, properties, data, run_id,
                 synced_at)
             SELECT id, to_timestamp(0) + ms * interval '1 millisecond',
                    to_timestamp(0) + ms * interval '1 millisecond', archived,
                    properties, data, 1, now()
             FROM (SELECT id, ms, archived, data::json AS data,
                          data::jsonb -> 'properties' AS properties
                   FROM unnest($1::text[], $2::bigint[], $3::bool[], $4::text[])
                        AS u(id, ms, archived, data)) AS u
             ON CONFLICT (id) DO UPDATE SET updated_at = EXCLUDED.updated_at,
                 created_at = EXCLUDED.created_at, archived = EXCLUDED.archived,
                 properties = EXCLUDED.properties, data = EXCLUDED.data,
                 run_id = EXCLUDED.run_id, synced_at = EXCLUDED.synced_at
             WHERE raw.updated_at <= EXCLUDED.updated_at",
            &[&ids, &times, &archived, &data],
        )
        .await
        .expect("insert");
    client.batch_execute("COMMIT").await.expect("commit");
}
