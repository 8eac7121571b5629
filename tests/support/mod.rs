//! Shared helpers of the end-to-end tests. They start the real example binaries
//! (`fake-hubspot`, `data-streams`, `worker`, `quickstart`) as separate processes, talk to them
//! over HTTP, and compare what data-streams stored with the fake's data set, exactly.
//!
//! Every process is SIGKILLed when its handle drops. When a test fails, each handle prints what
//! its process wrote (the stdout lines and the tail of its stderr), so a failure explains
//! itself. The binaries are those `cargo test` builds as examples, next to the test binary.
//!
//! Deadlines are generous (a minute or two): these are debug builds, often on a slow,
//! two-core CI machine, and a deadline only bounds how long a broken build takes to fail.

#![allow(dead_code)] // each test file uses a different part of this module

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::future::Future;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::{json, Value};
use tempfile::{NamedTempFile, TempDir};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// How long a service may take to print its ready line.
pub(crate) const READY_WITHIN: Duration = Duration::from_secs(60);
/// How long a stream may take to reach an expected state (a full sync, a reconnect, retries).
pub(crate) const CONVERGE_WITHIN: Duration = Duration::from_secs(120);
/// How long a service may take to exit after SIGINT.
pub(crate) const EXIT_WITHIN: Duration = Duration::from_secs(30);
/// How often a condition is polled.
pub(crate) const POLL: Duration = Duration::from_millis(100);
/// How often the stored set is compared: each comparison pages through every record.
const SYNC_POLL: Duration = Duration::from_millis(250);
/// One HTTP call's deadline: a stop waits for the run's page boundary, which data-streams
/// bounds at 60 s.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(90);

/// The token the fake accepts and the workers send.
pub(crate) const HUBSPOT_TOKEN: &str = "e2e-hubspot-token";
/// The secret data-streams and the workers share unless a test says otherwise.
pub(crate) const SHARED_SECRET: &str = "e2e-shared-secret";
/// The stream most tests run.
pub(crate) const STREAM: &str = "contacts";

/// The start body of a HubSpot contacts stream.
pub(crate) fn contacts_stream(interval_secs: u64) -> Value {
    json!({"source": {"kind": "hubspot", "object": "contacts"}, "interval_secs": interval_secs})
}

// ---------------------------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------------------------

/// The path of an example binary: `<target>/<profile>/examples/<name>`, the test binary being
/// `<target>/<profile>/deps/<test>-<hash>`.
pub(crate) fn binary_path(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let profile = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test binary lives in <target>/<profile>/deps");
    let path = profile
        .join("examples")
        .join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.is_file(),
        "{} is missing: a plain `cargo test` builds the examples; after `cargo test --test <name>` \
         alone, run `cargo build --examples` first",
        path.display()
    );
    path
}

/// Whether an inherited variable is dropped from a child's environment: the tests set the
/// services' variables themselves, so a developer's shell cannot change a test, and every
/// address here is loopback, so no proxy may get in the way.
fn unwanted_in_children(key: &str) -> bool {
    ["WELD_", "HUBSPOT_", "FAKE_HUBSPOT_"]
        .iter()
        .any(|prefix| key.starts_with(prefix))
        || ["http_proxy", "https_proxy", "all_proxy"]
            .iter()
            .any(|proxy| key.eq_ignore_ascii_case(proxy))
}

/// A child process: its stdout read line by line on a thread (so a ready line can be awaited
/// with a deadline), its stderr kept in a temporary file, killed when dropped.
#[derive(Debug)]
pub(crate) struct Process {
    name: String,
    child: Child,
    lines: mpsc::UnboundedReceiver<String>,
    seen: Vec<String>,
    stderr: NamedTempFile,
}

impl Process {
    /// Starts an example binary with these variables set.
    pub(crate) fn spawn(binary: &str, env: &[(&str, String)]) -> Process {
        Process::spawn_in(binary, env, None)
    }

    /// Starts an example binary with these variables set, in `dir` when given.
    pub(crate) fn spawn_in(binary: &str, env: &[(&str, String)], dir: Option<&Path>) -> Process {
        let path = binary_path(binary);
        let stderr = NamedTempFile::new().expect("a file for the child's stderr");
        let mut command = Command::new(&path);
        for (key, _) in std::env::vars_os() {
            if key.to_str().is_some_and(unwanted_in_children) {
                command.env_remove(&key);
            }
        }
        command.env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
        );
        for (key, value) in env {
            command.env(key, value);
        }
        if let Some(dir) = dir {
            command.current_dir(dir);
        }
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(
                stderr.reopen().expect("the stderr file, reopened"),
            ));
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", path.display()));
        let stdout = child.stdout.take().expect("a piped stdout");
        let (sender, lines) = mpsc::unbounded_channel();
        // A thread, not a task: the pipe is blocking, and it must be drained while the test is
        // busy elsewhere, or a chatty child would block on a full pipe.
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut buffer = Vec::new();
            loop {
                buffer.clear();
                match reader.read_until(b'\n', &mut buffer) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let line = String::from_utf8_lossy(&buffer)
                            .trim_end_matches(['\r', '\n'])
                            .to_string();
                        if sender.send(line).is_err() {
                            break;
                        }
                    }
                }
            }
        });
        Process {
            name: format!("{binary} (pid {})", child.id()),
            child,
            lines,
            seen: Vec::new(),
            stderr,
        }
    }

    /// The binary's name and pid, for messages.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// Its process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for a stdout line that `matches`, and returns it.
    ///
    /// # Panics
    ///
    /// When the process closes its stdout (exits) or `within` passes first.
    pub(crate) async fn wait_line(
        &mut self,
        what: &str,
        within: Duration,
        matches: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.lines.recv()).await {
                Ok(Some(line)) => {
                    self.seen.push(line.clone());
                    if matches(&line) {
                        return line;
                    }
                }
                Ok(None) => {
                    let exit = self.child.try_wait().ok().flatten();
                    panic!(
                        "{} closed its stdout (exit: {exit:?}) before printing {what}",
                        self.name
                    )
                }
                Err(_) => panic!("{} did not print {what} within {within:?}", self.name),
            }
        }
    }

    /// Whether it still runs.
    pub(crate) fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// `kill -9`: no chance to flush or say goodbye. Waits until it is gone.
    pub(crate) fn kill9(&mut self) {
        if self.is_running() {
            let name = &self.name;
            self.child
                .kill()
                .unwrap_or_else(|e| panic!("cannot kill {name}: {e}"));
        }
        let _ = self.child.wait();
    }

    /// Sends SIGINT, as Ctrl-C does (through kill(1): the tests use no libc).
    pub(crate) fn interrupt(&self) {
        self.signal("INT");
    }

    /// Sends it SIGTERM, as a service manager stopping it would.
    pub(crate) fn terminate(&self) {
        self.signal("TERM");
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("kill(1) runs");
        assert!(
            status.success(),
            "kill -{name} {} failed: {status}",
            self.name
        );
    }

    /// Waits for it to exit and returns how it did.
    ///
    /// # Panics
    ///
    /// When it still runs after `within`.
    pub(crate) async fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("the child's status") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not exit within {within:?}",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Everything it logged so far (its stderr).
    pub(crate) fn logs(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(self.stderr.path()).unwrap_or_default()).into()
    }

    /// What it printed: every stdout line so far and the tail of its stderr.
    fn report(&mut self) -> String {
        const TAIL: usize = 60;
        while let Ok(line) = self.lines.try_recv() {
            self.seen.push(line);
        }
        let stderr = std::fs::read(self.stderr.path()).unwrap_or_default();
        let stderr = String::from_utf8_lossy(&stderr);
        let stderr: Vec<&str> = stderr.lines().collect();
        let stdout: Vec<&str> = self.seen.iter().map(String::as_str).collect();
        format!(
            "\n===== {name}: stdout, last {TAIL} lines =====\n{}\n===== {name}: stderr, last {TAIL} lines =====\n{}\n",
            tail(&stdout, TAIL),
            tail(&stderr, TAIL),
            name = self.name,
        )
    }
}

fn tail(lines: &[&str], count: usize) -> String {
    lines[lines.len().saturating_sub(count)..].join("\n")
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("{}", self.report());
        }
    }
}

/// A fresh temporary directory (data directories of the services).
pub(crate) fn temp_dir() -> TempDir {
    tempfile::Builder::new()
        .prefix("weld-e2e-")
        .tempdir()
        .expect("a temporary directory")
}

/// A loopback address with a port that was free a moment ago, for a service that must be
/// known before it starts (a worker dialing a data-streams not yet running).
pub(crate) fn free_addr() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().expect("its address").to_string()
}

/// The value of `key=value` among a line's space-separated tokens.
fn line_field<'a>(line: &'a str, key: &str) -> &'a str {
    line.split_whitespace()
        .find_map(|token| token.strip_prefix(key))
        .unwrap_or_else(|| panic!("no {key}... in the line {line:?}"))
}

// ---------------------------------------------------------------------------------------------
// The fake HubSpot
// ---------------------------------------------------------------------------------------------

/// A running `fake-hubspot`, with its admin routes.
#[derive(Debug)]
pub(crate) struct Fake {
    pub(crate) process: Process,
    /// `http://127.0.0.1:PORT`, for `HUBSPOT_BASE_URL`.
    pub(crate) url: String,
    http: reqwest::Client,
}

/// Starts the fake with `contacts` contacts, on a free port.
pub(crate) async fn start_fake(contacts: usize, extra_env: &[(&str, &str)]) -> Fake {
    let mut env = vec![
        ("FAKE_HUBSPOT_ADDR", "127.0.0.1:0".to_string()),
        ("FAKE_HUBSPOT_TOKEN", HUBSPOT_TOKEN.to_string()),
        ("FAKE_HUBSPOT_CONTACTS", contacts.to_string()),
    ];
    env.extend(
        extra_env
            .iter()
            .map(|(key, value)| (*key, value.to_string())),
    );
    let mut process = Process::spawn("fake-hubspot", &env);
    let line = process
        .wait_line("its listening line", READY_WITHIN, |line| {
            line.starts_with("fake HubSpot listening on ")
        })
        .await;
    let url = line
        .rsplit(' ')
        .next()
        .expect("a URL ends the line")
        .to_string();
    Fake {
        process,
        url,
        http: http_client(),
    }
}

impl Fake {
    async fn call(&self, request: RequestBuilder, what: &str) -> Value {
        let (status, body) = send(request).await;
        assert!(status.is_success(), "fake {what}: {status} {body}");
        body
    }

    /// Injects faults into the next matching requests: one plan
    /// (`{"kind":"status","status":503,"count":3}`) or an array of them, applied in order.
    pub(crate) async fn inject(&self, plans: Value) {
        let plans = if plans.is_array() {
            plans
        } else {
            Value::Array(vec![plans])
        };
        let request = self
            .http
            .post(format!("{}/_admin/faults", self.url))
            .json(&plans);
        self.call(request, "inject").await;
    }

    /// Changes the data set (`{"object":"contacts","modify":10,"create":5,"archive":3}`);
    /// returns the ids touched.
    pub(crate) async fn mutate(&self, mutation: Value) -> Value {
        let request = self
            .http
            .post(format!("{}/_admin/mutate", self.url))
            .json(&mutation);
        self.call(request, "mutate").await
    }

    /// What it served so far (`requests`, `searches`, `by_status`, ...).
    pub(crate) async fn stats(&self) -> Value {
        let request = self.http.get(format!("{}/_admin/stats", self.url));
        self.call(request, "stats").await
    }

    /// CRM requests received so far: counted on arrival, before any delay.
    pub(crate) async fn requests(&self) -> u64 {
        let stats = self.stats().await;
        stats["requests"]
            .as_u64()
            .unwrap_or_else(|| panic!("no request count in {stats}"))
    }

    /// Every contact it holds, live and archived: `{"id","updatedAt","archived","properties"}`.
    pub(crate) async fn dump_contacts(&self) -> Vec<Value> {
        let request = self
            .http
            .get(format!("{}/_admin/dump", self.url))
            .query(&[("object", "contacts")]);
        match self.call(request, "dump").await {
            Value::Array(records) => records,
            other => panic!("the fake's dump is not an array: {other}"),
        }
    }

    /// Its contacts as the set a stream must mirror.
    pub(crate) async fn contacts(&self) -> SourceSet {
        SourceSet::from_dump(self.dump_contacts().await)
    }
}

// ---------------------------------------------------------------------------------------------
// data-streams and workers
// ---------------------------------------------------------------------------------------------

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
    let mut process = Process::spawn("data-streams", &env);
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
    /// The incremental settle delay: 0, so a change at the fake shows up on the next run.
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
            settle_secs: 0,
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
        let fake = start_fake(contacts, &[]).await;
        let dirs = [temp_dir(), temp_dir()];
        let data_streams = start_data_streams(DataStreamsOpts {
            transport: transport.to_string(),
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

// ---------------------------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------------------------

fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(REQUEST_TIMEOUT)
        .build()
        .expect("an HTTP client")
}

/// Sends a request; returns its status and its body as JSON (`Null` when empty, a string when
/// not JSON, so a test can still show it).
///
/// # Panics
///
/// When the request gets no answer.
pub(crate) async fn send(request: RequestBuilder) -> (StatusCode, Value) {
    let response = request
        .send()
        .await
        .unwrap_or_else(|e| panic!("no answer: {e}"));
    let status = response.status();
    let bytes = response
        .bytes()
        .await
        .unwrap_or_else(|e| panic!("a {status} answer's body broke off: {e}"));
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
    };
    (status, body)
}

/// A client of data-streams' HTTP API.
#[derive(Clone, Debug)]
pub(crate) struct Api {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

impl Api {
    /// A client of the API at `base` (`http://127.0.0.1:PORT`), sending `token` as Bearer.
    pub(crate) fn new(base: &str, token: Option<&str>) -> Api {
        Api {
            base: base.trim_end_matches('/').to_string(),
            token: token.map(str::to_string),
            http: http_client(),
        }
    }

    /// A request to `path` (`/streams/x`), with the token.
    pub(crate) fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let request = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    /// `GET path`: status and body.
    pub(crate) async fn get(&self, path: &str) -> (StatusCode, Value) {
        send(self.request(Method::GET, path)).await
    }

    async fn expect(&self, request: RequestBuilder, want: StatusCode, what: &str) -> Value {
        let (status, body) = send(request).await;
        assert_eq!(status, want, "{what}: {body}");
        body
    }

    /// `GET /metrics`: Prometheus text.
    pub(crate) async fn metrics(&self) -> String {
        let response = self
            .request(Method::GET, "/metrics")
            .send()
            .await
            .expect("GET /metrics");
        assert_eq!(response.status(), StatusCode::OK);
        response.text().await.expect("the metrics' text")
    }

    /// `GET /health`.
    pub(crate) async fn health(&self) -> Value {
        self.expect(
            self.request(Method::GET, "/health"),
            StatusCode::OK,
            "health",
        )
        .await
    }

    /// Connected workers, as `/health` counts them.
    pub(crate) async fn workers(&self) -> u64 {
        let health = self.health().await;
        health["workers"]
            .as_u64()
            .unwrap_or_else(|| panic!("no worker count in {health}"))
    }

    /// Waits until `/health` counts `count` workers.
    pub(crate) async fn wait_workers(&self, count: u64) {
        wait_until(
            &format!("{count} connected worker(s)"),
            CONVERGE_WITHIN,
            || async { self.workers().await == count },
        )
        .await;
    }

    /// `POST /streams/{name}/start`: the stream's status.
    pub(crate) async fn start_stream(&self, name: &str, body: Value) -> Value {
        let request = self
            .request(Method::POST, &format!("/streams/{name}/start"))
            .json(&body);
        let (status, answer) = send(request).await;
        assert!(status.is_success(), "start {name}: {status} {answer}");
        answer
    }

    /// `POST /streams/{name}/stop`: the stream's status.
    pub(crate) async fn stop_stream(&self, name: &str) -> Value {
        let request = self.request(Method::POST, &format!("/streams/{name}/stop"));
        self.expect(request, StatusCode::OK, &format!("stop {name}"))
            .await
    }

    /// `DELETE /streams/{name}`: status and body.
    pub(crate) async fn delete_stream(&self, name: &str) -> (StatusCode, Value) {
        send(self.request(Method::DELETE, &format!("/streams/{name}"))).await
    }

    /// `GET /streams/{name}`.
    pub(crate) async fn status(&self, name: &str) -> Value {
        let request = self.request(Method::GET, &format!("/streams/{name}"));
        self.expect(request, StatusCode::OK, &format!("status of {name}"))
            .await
    }

    /// `GET /streams`: every stream's status.
    pub(crate) async fn list_streams(&self) -> Vec<Value> {
        let body = self
            .expect(
                self.request(Method::GET, "/streams"),
                StatusCode::OK,
                "streams",
            )
            .await;
        match &body["streams"] {
            Value::Array(streams) => streams.clone(),
            _ => panic!("no streams array in {body}"),
        }
    }

    /// `GET /streams/{name}/runs`: newest first.
    pub(crate) async fn runs(&self, name: &str) -> Vec<Value> {
        let request = self.request(Method::GET, &format!("/streams/{name}/runs"));
        let body = self
            .expect(request, StatusCode::OK, &format!("runs of {name}"))
            .await;
        match &body["runs"] {
            Value::Array(runs) => runs.clone(),
            _ => panic!("no runs array in {body}"),
        }
    }

    /// Every stored record, live (`archived=false`) or archived (`archived=true`), paged 1,000
    /// at a time through `next`.
    ///
    /// # Panics
    ///
    /// When a record shows up twice: paging must visit each exactly once.
    pub(crate) async fn all_records(&self, name: &str, archived: bool) -> Vec<Value> {
        const MAX_PAGES: usize = 10_000;
        let mut records = Vec::new();
        let mut ids = HashSet::new();
        let mut after: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let mut query = vec![
                ("limit", "1000".to_string()),
                ("archived", archived.to_string()),
            ];
            if let Some(after) = &after {
                query.push(("after", after.clone()));
            }
            let request = self
                .request(Method::GET, &format!("/streams/{name}/records"))
                .query(&query);
            let body = self
                .expect(request, StatusCode::OK, &format!("records of {name}"))
                .await;
            let Value::Array(page) = &body["records"] else {
                panic!("no records array in {body}");
            };
            for record in page {
                let id = record["id"]
                    .as_str()
                    .unwrap_or_else(|| panic!("a record without a string id: {record}"));
                assert!(
                    ids.insert(id.to_string()),
                    "record {id} appeared twice while paging {name}'s records (archived={archived})"
                );
                records.push(record.clone());
            }
            after = match &body["next"] {
                Value::Null => return records,
                Value::String(next) => Some(next.clone()),
                other => Some(other.to_string()),
            };
        }
        panic!("paging {name}'s records did not end after {MAX_PAGES} pages")
    }

    /// Waits until the stream is in `state` (`running`, `pending`, `stopped`); its status.
    pub(crate) async fn wait_state(&self, name: &str, state: &str) -> Value {
        wait_for(
            &format!("stream {name} to be {state}"),
            CONVERGE_WITHIN,
            || async {
                let status = self.status(name).await;
                let reached = status["state"] == state;
                reached.then_some(status)
            },
        )
        .await
    }
}

// ---------------------------------------------------------------------------------------------
// Waiting
// ---------------------------------------------------------------------------------------------

/// Polls `probe` every [`POLL`] until it gives a value, and returns it.
///
/// # Panics
///
/// When `within` passes first, naming `what` was awaited.
pub(crate) async fn wait_for<T, F, Fut>(what: &str, within: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// Polls `condition` every [`POLL`] until it holds.
///
/// # Panics
///
/// When `within` passes first, naming `what` was awaited.
pub(crate) async fn wait_until<F, Fut>(what: &str, within: Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    wait_for(what, within, || {
        let holds = condition();
        async move { holds.await.then_some(()) }
    })
    .await
}

// ---------------------------------------------------------------------------------------------
// The stored set against the source's
// ---------------------------------------------------------------------------------------------

/// The fake's records by id, split as the API lists them: live and archived.
#[derive(Clone, Debug, Default)]
pub(crate) struct SourceSet {
    pub(crate) live: BTreeMap<String, Value>,
    pub(crate) archived: BTreeMap<String, Value>,
}

impl SourceSet {
    /// From the fake's dump.
    pub(crate) fn from_dump(dump: Vec<Value>) -> SourceSet {
        let mut set = SourceSet::default();
        for record in dump {
            let id = record["id"]
                .as_str()
                .unwrap_or_else(|| panic!("a dumped record without an id: {record}"))
                .to_string();
            let archived = record["archived"]
                .as_bool()
                .unwrap_or_else(|| panic!("a dumped record without archived: {record}"));
            let side = if archived {
                &mut set.archived
            } else {
                &mut set.live
            };
            side.insert(id, record);
        }
        set
    }
}

/// How the stream's stored set differs from `expected`, or `Ok` when it is the same, exactly:
/// each live id of the source once in the live listing, each archived one once in the archived
/// listing, with the source's `updatedAt` and property values, nothing else, and the status's
/// counts agreeing.
pub(crate) async fn stored_diff(
    api: &Api,
    stream: &str,
    expected: &SourceSet,
) -> Result<(), String> {
    let mut problems = Vec::new();
    let live = api.all_records(stream, false).await;
    compare("live", &live, &expected.live, false, &mut problems);
    let archived = api.all_records(stream, true).await;
    compare(
        "archived",
        &archived,
        &expected.archived,
        true,
        &mut problems,
    );
    let status = api.status(stream).await;
    for (field, want) in [
        ("records", expected.live.len()),
        ("archived", expected.archived.len()),
    ] {
        if status[field].as_u64() != Some(want as u64) {
            problems.push(format!(
                "status.{field} is {}, the source has {want}",
                status[field]
            ));
        }
    }
    if problems.is_empty() {
        return Ok(());
    }
    const SHOWN: usize = 10;
    let more = problems.len().saturating_sub(SHOWN);
    problems.truncate(SHOWN);
    if more > 0 {
        problems.push(format!("... and {more} more"));
    }
    Err(problems.join("\n  "))
}

fn compare(
    listing: &str,
    stored: &[Value],
    expected: &BTreeMap<String, Value>,
    archived: bool,
    problems: &mut Vec<String>,
) {
    let mut seen = BTreeSet::new();
    for record in stored {
        let id = record["id"].as_str().unwrap_or_default();
        seen.insert(id);
        let Some(want) = expected.get(id) else {
            problems.push(format!(
                "{listing}: record {id} is not in the source's {listing} set"
            ));
            continue;
        };
        if record["archived"].as_bool() != Some(archived) {
            problems.push(format!(
                "{listing}: record {id} has archived {}",
                record["archived"]
            ));
        }
        if record["data"]["id"].as_str() != Some(id) {
            problems.push(format!(
                "{listing}: record {id} has data.id {}",
                record["data"]["id"]
            ));
        }
        // Instants, not strings: the API may write the same time differently than HubSpot.
        let want_at = want["updatedAt"].as_str().and_then(rfc3339_millis);
        let stored_at = record["updated_at"].as_str().and_then(rfc3339_millis);
        let data_at = record["data"]["updatedAt"]
            .as_str()
            .and_then(rfc3339_millis);
        if want_at.is_none() || stored_at != want_at || data_at != want_at {
            problems.push(format!(
                "{listing}: record {id} has updated_at {} and data.updatedAt {}, the source {}",
                record["updated_at"], record["data"]["updatedAt"], want["updatedAt"]
            ));
        }
        // The latest version: every property served equals the source's (absent there: null).
        match record["data"]["properties"].as_object() {
            Some(properties) => {
                for (name, value) in properties {
                    let source = want["properties"].get(name).unwrap_or(&Value::Null);
                    if value != source {
                        problems.push(format!(
                            "{listing}: record {id} has {name} = {value}, the source {source}"
                        ));
                    }
                }
            }
            None => problems.push(format!("{listing}: record {id} has no data.properties")),
        }
    }
    let missing: Vec<&str> = expected
        .keys()
        .map(String::as_str)
        .filter(|id| !seen.contains(id))
        .collect();
    if !missing.is_empty() {
        problems.push(format!(
            "{listing}: {} of the source's {} records are missing, e.g. {:?}",
            missing.len(),
            expected.len(),
            &missing[..missing.len().min(5)]
        ));
    }
}

/// Waits until the stream's stored set equals `expected` exactly (see [`stored_diff`]).
///
/// # Panics
///
/// When it does not within [`CONVERGE_WITHIN`], with the last difference seen.
pub(crate) async fn wait_synced(api: &Api, stream: &str, expected: &SourceSet) {
    let deadline = Instant::now() + CONVERGE_WITHIN;
    loop {
        // The counts are cheap; the full comparison pages through everything, so it runs once
        // they agree.
        let status = api.status(stream).await;
        let counted = status["records"].as_u64() == Some(expected.live.len() as u64)
            && status["archived"].as_u64() == Some(expected.archived.len() as u64);
        let difference = if counted {
            match stored_diff(api, stream, expected).await {
                Ok(()) => return,
                Err(difference) => difference,
            }
        } else {
            format!(
                "the status counts {} live and {} archived records, the source has {} and {}",
                status["records"],
                status["archived"],
                expected.live.len(),
                expected.archived.len()
            )
        };
        assert!(
            Instant::now() < deadline,
            "stream {stream} did not converge to the source's set within {CONVERGE_WITHIN:?}:\n  \
             {difference}\nlast status: {status}"
        );
        tokio::time::sleep(SYNC_POLL).await;
    }
}

/// Asserts the stream's stored set equals `expected` exactly, now (see [`stored_diff`]).
pub(crate) async fn assert_synced(api: &Api, stream: &str, expected: &SourceSet) {
    if let Err(difference) = stored_diff(api, stream, expected).await {
        panic!("stream {stream} differs from the source:\n  {difference}");
    }
}

/// Milliseconds since the epoch of an RFC 3339 time (`2025-07-07T20:27:17.947Z`, any fraction,
/// `Z` or an offset); `None` when it is not one.
pub(crate) fn rfc3339_millis(text: &str) -> Option<i64> {
    let bytes = text.as_bytes();
    if bytes.len() < 20
        || bytes[4] != b'-'
        || bytes[7] != b'-'
        || !matches!(bytes[10], b'T' | b't' | b' ')
        || bytes[13] != b':'
        || bytes[16] != b':'
    {
        return None;
    }
    let number = |from: usize, to: usize| -> Option<i64> {
        let digits = text.get(from..to)?;
        if !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        digits.parse().ok()
    };
    let (year, month, day) = (number(0, 4)?, number(5, 7)?, number(8, 10)?);
    let (hour, minute, second) = (number(11, 13)?, number(14, 16)?, number(17, 19)?);
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut rest = &text[19..];
    let mut millis = 0;
    if let Some(fraction) = rest.strip_prefix('.') {
        let digits = fraction.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        // Milliseconds: the first three digits, padded ("5" is 500 ms).
        millis = format!("{:0<3}", &fraction[..digits.min(3)]).parse().ok()?;
        rest = &fraction[digits..];
    }
    let offset_minutes = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes().first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let (hours, minutes) = rest[1..].split_once(':')?;
            if hours.len() != 2 || minutes.len() != 2 {
                return None;
            }
            sign * (hours.parse::<i64>().ok()? * 60 + minutes.parse::<i64>().ok()?)
        }
    };
    let seconds = days_from_civil(year, month, day) * 86_400 + hour * 3_600 + minute * 60 + second
        - offset_minutes * 60;
    Some(seconds * 1_000 + millis)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year.rem_euclid(400);
    let day_of_year = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}
