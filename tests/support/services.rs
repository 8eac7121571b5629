//! data-streams and workers.

use super::*;

/// How to start data-streams.
#[derive(Clone, Debug)]
pub(crate) struct DataStreamsOpts {
    /// `tcp` or `http`.
    pub(crate) transport: String,
    pub(crate) http_addr: String,
    pub(crate) transport_addr: String,
    pub(crate) data_dir: PathBuf,
    pub(crate) api_token: Option<String>,
    pub(crate) shared_secret: Option<String>,
    /// The most file descriptors it may hold; unlimited (the system's) when `None`.
    pub(crate) max_open_files: Option<u64>,
    /// `WELD_DATABASE_URL`: PostgreSQL instead of sled.
    pub(crate) database_url: Option<String>,
    /// `WELD_REPLICA_ID`, with a database.
    pub(crate) replica_id: Option<String>,
    /// `WELD_LEASE_SECS`, with a database.
    pub(crate) lease_secs: Option<u64>,
}

impl DataStreamsOpts {
    /// TCP transport, free ports, no API token, the shared secret.
    pub(crate) fn new(data_dir: &Path) -> Self {
        DataStreamsOpts {
            transport: "tcp".into(),
            http_addr: "127.0.0.1:0".into(),
            transport_addr: "127.0.0.1:0".into(),
            data_dir: data_dir.to_path_buf(),
            api_token: None,
            shared_secret: Some(SHARED_SECRET.into()),
            max_open_files: None,
            database_url: None,
            replica_id: None,
            lease_secs: None,
        }
    }
}

/// A running data-streams.
#[derive(Debug)]
pub(crate) struct DataStreams {
    pub(crate) process: Process,
    /// `http://127.0.0.1:PORT`.
    pub(crate) api_url: String,
    /// `127.0.0.1:PORT`, for `WELD_CONTROLLER_ADDR`.
    pub(crate) transport_addr: String,
    pub(crate) opts: DataStreamsOpts,
}

impl DataStreams {
    /// A client of its API, with its token if it has one.
    pub(crate) fn api(&self) -> Api {
        Api::new(&self.api_url, self.opts.api_token.as_deref())
    }

    /// The options that start it again in the same place: the addresses it bound (workers
    /// reconnect to the same transport address) and the same data.
    pub(crate) fn restart_opts(&self) -> DataStreamsOpts {
        DataStreamsOpts {
            http_addr: self.api_url.trim_start_matches("http://").to_string(),
            transport_addr: self.transport_addr.clone(),
            ..self.opts.clone()
        }
    }
}

/// Starts data-streams and waits for its ready line.
pub(crate) async fn start_data_streams(opts: DataStreamsOpts) -> DataStreams {
    let mut env = vec![
        ("WELD_HTTP_ADDR", opts.http_addr.clone()),
        ("WELD_TRANSPORT", opts.transport.clone()),
        ("WELD_TRANSPORT_ADDR", opts.transport_addr.clone()),
        (
            "WELD_DATA_DIR",
            opts.data_dir.to_string_lossy().into_owned(),
        ),
    ];
    if let Some(token) = &opts.api_token {
        env.push(("WELD_API_TOKEN", token.clone()));
    }
    if let Some(secret) = &opts.shared_secret {
        env.push(("WELD_SHARED_SECRET", secret.clone()));
    }
    if let Some(url) = &opts.database_url {
        env.push(("WELD_DATABASE_URL", url.clone()));
    }
    if let Some(id) = &opts.replica_id {
        env.push(("WELD_REPLICA_ID", id.clone()));
    }
    if let Some(secs) = opts.lease_secs {
        env.push(("WELD_LEASE_SECS", secs.to_string()));
    }
    let mut process = Process::spawn_limited("data-streams", &env, None, opts.max_open_files);
    let ready = process
        .wait_line("its ready line", READY_WITHIN, |line| {
            line.starts_with("data-streams ready ")
        })
        .await;
    let api_url = line_field(&ready, "api=").to_string();
    let transport_addr = line_field(&ready, "transport=").to_string();
    DataStreams {
        process,
        api_url,
        transport_addr,
        opts,
    }
}

/// How to start a worker.
#[derive(Clone, Debug)]
pub(crate) struct WorkerOpts {
    /// `tcp` or `http`.
    pub(crate) transport: String,
    pub(crate) controller_addr: String,
    pub(crate) data_dir: PathBuf,
    pub(crate) id: String,
    pub(crate) shared_secret: Option<String>,
    pub(crate) hubspot_url: String,
    pub(crate) hubspot_token: String,
    /// The incremental settle delay: 1 s. The fake stamps a mutation's records up to one
    /// millisecond per record before the moment they become visible (as HubSpot's search
    /// index trails its writes), so a window ending at "now" would step past them when a
    /// mutation lands while a run searches: a mutation of up to 1,000 records is safe.
    pub(crate) settle_secs: u64,
}

impl WorkerOpts {
    /// A TCP worker `e2e-worker` with the shared secret, reading the fake at `hubspot_url`.
    pub(crate) fn new(controller_addr: &str, hubspot_url: &str, data_dir: &Path) -> Self {
        WorkerOpts {
            transport: "tcp".into(),
            controller_addr: controller_addr.into(),
            data_dir: data_dir.to_path_buf(),
            id: "e2e-worker".into(),
            shared_secret: Some(SHARED_SECRET.into()),
            hubspot_url: hubspot_url.into(),
            hubspot_token: HUBSPOT_TOKEN.into(),
            settle_secs: 1,
        }
    }
}

/// A running worker.
#[derive(Debug)]
pub(crate) struct Worker {
    pub(crate) process: Process,
    pub(crate) opts: WorkerOpts,
}

/// Starts a worker and waits for its ready line (it may not be connected yet).
pub(crate) async fn start_worker(opts: WorkerOpts) -> Worker {
    let mut env = vec![
        ("WELD_TRANSPORT", opts.transport.clone()),
        ("WELD_CONTROLLER_ADDR", opts.controller_addr.clone()),
        (
            "WELD_DATA_DIR",
            opts.data_dir.to_string_lossy().into_owned(),
        ),
        ("WELD_WORKER_ID", opts.id.clone()),
        ("HUBSPOT_BASE_URL", opts.hubspot_url.clone()),
        ("HUBSPOT_ACCESS_TOKEN", opts.hubspot_token.clone()),
        ("HUBSPOT_SETTLE_SECS", opts.settle_secs.to_string()),
    ];
    if let Some(secret) = &opts.shared_secret {
        env.push(("WELD_SHARED_SECRET", secret.clone()));
    }
    let mut process = Process::spawn("worker", &env);
    process
        .wait_line("its ready line", READY_WITHIN, |line| {
            line.starts_with("worker ready")
        })
        .await;
    Worker { process, opts }
}

/// The fake, data-streams and one worker, wired together, the worker connected.
#[derive(Debug)]
pub(crate) struct Cluster {
    pub(crate) fake: Fake,
    pub(crate) data_streams: DataStreams,
    pub(crate) worker: Worker,
    pub(crate) api: Api,
    // Last, so they go after the processes using them: data-streams', the worker's.
    _dirs: [TempDir; 2],
}

impl Cluster {
    /// Starts the three over `transport` (`tcp` or `http`), the fake with `contacts` contacts,
    /// and waits until the worker is connected.
    pub(crate) async fn start(contacts: usize, transport: &str) -> Cluster {
        Self::start_on(contacts, transport, None).await
    }

    /// [`Cluster::start`] with data-streams on the PostgreSQL database at `database_url`, or on
    /// sled for `None`.
    pub(crate) async fn start_on(
        contacts: usize,
        transport: &str,
        database_url: Option<String>,
    ) -> Cluster {
        let fake = start_fake(contacts, &[]).await;
        let dirs = [temp_dir(), temp_dir()];
        let data_streams = start_data_streams(DataStreamsOpts {
            transport: transport.to_string(),
            database_url,
            ..DataStreamsOpts::new(dirs[0].path())
        })
        .await;
        let worker = start_worker(WorkerOpts {
            transport: transport.to_string(),
            ..WorkerOpts::new(&data_streams.transport_addr, &fake.url, dirs[1].path())
        })
        .await;
        let api = data_streams.api();
        api.wait_workers(1).await;
        Cluster {
            fake,
            data_streams,
            worker,
            api,
            _dirs: dirs,
        }
    }

    /// Starts the worker again with the same id and data directory. Kill it first.
    pub(crate) async fn restart_worker(&mut self) {
        let opts = self.worker.opts.clone();
        self.worker = start_worker(opts).await;
    }

    /// Starts data-streams again on the same addresses with the same data. Kill it first.
    pub(crate) async fn restart_data_streams(&mut self) {
        let opts = self.data_streams.restart_opts();
        self.data_streams = start_data_streams(opts).await;
        // A new client: the old one's pooled connections died with the old process.
        self.api = self.data_streams.api();
    }
}
