//! `--processes`: data-streams and a worker as the release binaries, each its own process, the
//! way a user runs them; the stream started and watched through the HTTP API.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::{Args, SourceKind, TransportKind};

/// How long a process may take to say it is ready: the fake generates its data set first.
const READY_WITHIN: Duration = Duration::from_secs(300);

/// A child process, killed and reaped when dropped.
struct Service {
    name: &'static str,
    child: Child,
}

impl Service {
    /// Starts `binary` with `env` and waits ([`READY_WITHIN`] at most) for the stdout line
    /// starting with `ready`; returns it with the line.
    fn start(
        name: &'static str,
        binary: &Path,
        env: &[(&str, String)],
        ready: &str,
    ) -> Result<(Service, String), Box<dyn std::error::Error>> {
        let mut command = Command::new(binary);
        command
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = command
            .spawn()
            .map_err(|e| format!("{} cannot start: {e}", binary.display()))?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let service = Service { name, child };
        let (lines, found) = std::sync::mpsc::channel();
        let ready = ready.to_string();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.starts_with(&ready) {
                    let _ = lines.send(line);
                }
            }
        });
        let line = found
            .recv_timeout(READY_WITHIN)
            .map_err(|_| format!("{name} did not say it was ready within {READY_WITHIN:?}"))?;
        Ok((service, line))
    }

    /// Its peak resident set (`VmHWM`), in MiB.
    fn peak_rss_mib(&self) -> f64 {
        super::peak_rss_mib(&self.child.id().to_string())
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The binary `name` beside this example.
fn binary(name: &str) -> Result<PathBuf, Box<dyn std::error::Error>> {
    let here = std::env::current_exe()?;
    let path = here.with_file_name(name);
    if path.exists() {
        Ok(path)
    } else {
        Err(format!(
            "{} is missing: build the examples first (cargo build --release --examples)",
            path.display()
        )
        .into())
    }
}

/// Runs the stream through data-streams and a worker as processes (and the HubSpot fake, for
/// `--source hubspot-fake`); returns the time from the start request to the stream's run
/// reported succeeded with every record stored, and the peak RSS of each process. The fake's
/// is reported apart: its data set is not the pipeline's memory.
pub(crate) async fn run(
    args: &Args,
    dir: &Path,
    url: Option<&str>,
) -> Result<(Duration, Value), Box<dyn std::error::Error>> {
    let transport = match args.transport {
        TransportKind::Tcp => "tcp",
        TransportKind::Http => "http",
        TransportKind::Memory => return Err("--processes needs --transport tcp or http".into()),
    };
    let mut env = vec![
        ("WELD_TRANSPORT", transport.to_string()),
        ("WELD_HTTP_ADDR", "127.0.0.1:0".to_string()),
        ("WELD_TRANSPORT_ADDR", "127.0.0.1:0".to_string()),
        (
            "WELD_DATA_DIR",
            dir.join("data-streams").display().to_string(),
        ),
    ];
    if let Some(url) = url {
        env.push(("WELD_DATABASE_URL", url.to_string()));
    }
    let (data_streams, line) = Service::start(
        "data-streams",
        &binary("data-streams")?,
        &env,
        "data-streams ready",
    )?;
    // `data-streams ready api=http://<addr> transport=<addr>`
    let field = |name: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(name))
            .map(str::to_string)
            .ok_or_else(|| format!("no {name} in {line:?}"))
    };
    let (api, transport_addr) = (field("api=")?, field("transport=")?);
    let mut worker_env = vec![
        ("WELD_TRANSPORT", transport.to_string()),
        ("WELD_CONTROLLER_ADDR", transport_addr),
        ("WELD_DATA_DIR", dir.join("worker").display().to_string()),
        ("WELD_WORKER_ID", "throughput".to_string()),
    ];
    let mut fake = None;
    let source = match args.source {
        SourceKind::Generator => json!({"kind": "generator", "records": args.records,
                                        "page_size": args.batch, "record_bytes": args.record_bytes}),
        SourceKind::HubspotFake => {
            // No limit on either side: the figure is the pipeline's, not a budget's.
            let (started, line) = Service::start(
                "fake-hubspot",
                &binary("fake-hubspot")?,
                &[
                    ("FAKE_HUBSPOT_ADDR", "127.0.0.1:0".to_string()),
                    ("FAKE_HUBSPOT_CONTACTS", args.records.to_string()),
                    ("FAKE_HUBSPOT_SEARCH_PER_SECOND", "0".to_string()),
                    (
                        "FAKE_HUBSPOT_CUSTOM_PROPERTIES",
                        args.custom_properties.to_string(),
                    ),
                ],
                "fake HubSpot listening on",
            )?;
            let url = line
                .split_whitespace()
                .last()
                .unwrap_or_default()
                .to_string();
            fake = Some(started);
            worker_env.extend([
                ("HUBSPOT_BASE_URL", url),
                ("HUBSPOT_ACCESS_TOKEN", "fake-token".to_string()),
                ("HUBSPOT_SETTLE_SECS", "0".to_string()),
                ("HUBSPOT_SEARCHES_PER_SECOND", "1000000".to_string()),
                ("HUBSPOT_PER_TEN_SECONDS", "1000000".to_string()),
            ]);
            json!({"kind": "hubspot", "object": "contacts"})
        }
    };
    let (worker, _) = Service::start("worker", &binary("worker")?, &worker_env, "worker ready")?;

    let http = reqwest::Client::new();
    let get = |path: String| {
        let request = http.get(format!("{api}{path}"));
        async move {
            let answer = request.send().await?;
            answer.json::<Value>().await
        }
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while get("/health".into()).await?["workers"].as_u64() != Some(1) {
        if Instant::now() > deadline {
            return Err("the worker did not connect within 30 s".into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let body = json!({"source": source, "interval_secs": 86_400});
    let started = Instant::now();
    let wall = weld_pipeline::Timestamp::now();
    let answer = http
        .post(format!("{api}/streams/throughput/start"))
        .json(&body)
        .send()
        .await?;
    if !answer.status().is_success() {
        return Err(format!("the start was refused: {}", answer.text().await?).into());
    }
    let timeout = Duration::from_secs(3_600);
    let finished = loop {
        let status = get("/streams/throughput".into()).await?;
        let done = status["last_run"]["state"] == "succeeded";
        if done && status["records"].as_u64() >= Some(args.records) {
            // Exactly the records sent, in the stream's count and in its run's: a count off at
            // this scale is a bug the figures must not hide.
            let counted = (
                status["records"].as_u64(),
                status["last_run"]["records"].as_u64(),
            );
            if counted != (Some(args.records), Some(args.records)) {
                return Err(format!("{} records sent, counted {counted:?}", args.records).into());
            }
            let at = status["last_run"]["finished_at"]
                .as_str()
                .unwrap_or_default();
            break weld_pipeline::Timestamp::parse_rfc3339(at)?;
        }
        if started.elapsed() > timeout {
            return Err(format!("not synced within {timeout:?}: {status}").into());
        }
        tokio::time::sleep(super::STATUS_POLL).await;
    };
    let elapsed = super::run_time(wall, finished, started.elapsed());
    // The mean size of a stored record's JSON, from a page of them.
    let page = get("/streams/throughput/records?limit=1000".into()).await?;
    let records = page["records"].as_array().cloned().unwrap_or_default();
    let record_bytes = (!records.is_empty()).then(|| {
        let total: usize = records.iter().map(|r| r["data"].to_string().len()).sum();
        total / records.len()
    });
    let reads = if args.read_latency {
        Some(read_latency(&http, &api, args).await?)
    } else {
        None
    };
    let mut rss = json!({
        data_streams.name: data_streams.peak_rss_mib(),
        worker.name: worker.peak_rss_mib(),
    });
    if let Some(fake) = &fake {
        rss[fake.name] = json!(fake.peak_rss_mib());
    }
    eprintln!(
        "pipeline: {:.2} s, {:.0} records/s, peak RSS {rss}",
        elapsed.as_secs_f64(),
        args.records as f64 / elapsed.as_secs_f64()
    );
    drop((worker, data_streams, fake));
    let mut measured = json!({"peak_rss_mib": rss, "reads": reads});
    if args.source == SourceKind::HubspotFake {
        measured["record_bytes"] = json!(record_bytes);
    }
    Ok((elapsed, measured))
}

/// Pages through the stored stream, 1,000 records a page, one request at a time, while a second
/// stream of as many records is ingested; returns the latency of each page's request.
async fn read_latency(
    http: &reqwest::Client,
    api: &str,
    args: &Args,
) -> Result<Value, Box<dyn std::error::Error>> {
    let body = json!({
        "source": {"kind": "generator", "records": args.records, "page_size": args.batch,
                   "record_bytes": args.record_bytes},
        "interval_secs": 86_400,
    });
    http.post(format!("{api}/streams/ingesting/start"))
        .json(&body)
        .send()
        .await?
        .error_for_status()?;
    let mut latencies = Vec::new();
    let mut after: Option<String> = None;
    let started = Instant::now();
    loop {
        let path = match &after {
            Some(token) => format!("{api}/streams/throughput/records?limit=1000&after={token}"),
            None => format!("{api}/streams/throughput/records?limit=1000"),
        };
        // Timed to the page's last byte, as `wrk` times a request: parsing a megabyte of JSON
        // into values is the client's work, not the service's.
        let asked = Instant::now();
        let body = http
            .get(path)
            .send()
            .await?
            .error_for_status()?
            .bytes()
            .await?;
        latencies.push(asked.elapsed().as_secs_f64() * 1e3);
        after = next_token(&body)?;
        // Checked every 20 pages: the status is a request too.
        if latencies.len() % 20 == 0 {
            let status: Value = http
                .get(format!("{api}/streams/ingesting"))
                .send()
                .await?
                .json()
                .await?;
            if status["records"].as_u64() >= Some(args.records) {
                break;
            }
        }
        if started.elapsed() > Duration::from_secs(3_600) {
            return Err("the second stream did not finish within an hour".into());
        }
    }
    latencies.sort_by(f64::total_cmp);
    let at = |q: f64| {
        let ms = latencies[((latencies.len() - 1) as f64 * q).round() as usize];
        (ms * 10.0).round() / 10.0
    };
    let reads = json!({"pages": latencies.len(), "p50_ms": at(0.5), "p99_ms": at(0.99),
                       "max_ms": at(1.0)});
    eprintln!("records pages of 1,000 while another stream ingests: {reads}");
    Ok(reads)
}

/// A records page's `next`, read from its tail without parsing its records: the service writes
/// `next` last, so the page's last `"next":` is its own, never one inside a record.
fn next_token(page: &[u8]) -> Result<Option<String>, Box<dyn std::error::Error>> {
    let key = b"\"next\":";
    let at = page
        .windows(key.len())
        .rposition(|window| window == key)
        .ok_or("a records page without next")?;
    let mut tail = b"{".to_vec();
    tail.extend_from_slice(&page[at..]);
    let tail: Value = serde_json::from_slice(&tail)?;
    Ok(tail["next"].as_str().map(str::to_string))
}
