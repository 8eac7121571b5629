//! A throw-away PostgreSQL for tests (feature `testing`): a cluster made with Debian's
//! `initdb` in a temporary directory, served by `postgres` on a free port of 127.0.0.1, `fsync`
//! left on.
//!
//! Where PostgreSQL is not installed ([`TestCluster::start`] finds no
//! `/usr/lib/postgresql/*/bin/initdb`), tests say so loudly and skip, unless
//! `WELD_REQUIRE_POSTGRES=1`: then they fail. Run as root (as CI does), the cluster runs as the
//! `postgres` user, which refuses to run as root.
//!
//! The server is a child of a small shell that watches its standard input: when the test
//! process ends, however it ends (SIGKILL included), the pipe closes and the shell stops the
//! server. Nothing a test starts outlives it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use weld_pipeline::sync::Locked;

use async_trait::async_trait;
use weld_pipeline::store::StreamStore;
use weld_pipeline::testing::stores::StoreUnderTest;

use crate::config::PostgresConfig;
use crate::store::PostgresStore;

/// A running throw-away cluster. Dropping it stops the server and removes its files.
#[derive(Debug)]
pub struct TestCluster {
    port: u16,
    dir: tempfile::TempDir,
    bin: PathBuf,
    watchdog: Mutex<Option<Child>>,
    /// Server options besides the port and address (`-c ssl=on ...`).
    options: String,
}

/// Why a test skipped, said once per test.
fn skip(why: &str) -> Option<TestCluster> {
    if std::env::var("WELD_REQUIRE_POSTGRES").as_deref() == Ok("1") {
        panic!("WELD_REQUIRE_POSTGRES=1, but {why}");
    }
    eprintln!(
        "SKIPPED: {why}. Install PostgreSQL (Debian: apt-get install postgresql) to run this test."
    );
    None
}

/// The newest `/usr/lib/postgresql/<version>/bin`, if PostgreSQL is installed.
fn binaries() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| out.stdout.trim_ascii() == b"0")
}

/// `program args`, as the `postgres` user when running as root.
fn command(program: &Path, args: &[&str]) -> Command {
    if is_root() {
        let mut command = Command::new("runuser");
        command
            .args(["-u", "postgres", "--"])
            .arg(program)
            .args(args);
        command
    } else {
        let mut command = Command::new(program);
        command.args(args);
        command
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on 127.0.0.1")
}

impl TestCluster {
    /// Makes and starts a cluster; `None` (said on stderr) where PostgreSQL is not installed.
    ///
    /// # Panics
    ///
    /// When the cluster cannot be made or started, or PostgreSQL is missing while
    /// `WELD_REQUIRE_POSTGRES=1`.
    pub fn start() -> Option<TestCluster> {
        Self::start_with(|_| String::new())
    }

    /// Makes and starts a cluster that takes TLS connections (and plain ones) with the
    /// certificate chain `cert_pem` and its key `key_pem`; `None` as [`start`](Self::start).
    ///
    /// # Panics
    ///
    /// As [`start`](Self::start), or when the files cannot be written.
    pub fn start_with_tls(cert_pem: &str, key_pem: &str) -> Option<TestCluster> {
        Self::start_with(|dir| {
            let (cert, key) = (dir.join("server.crt"), dir.join("server.key"));
            std::fs::write(&cert, cert_pem).expect("the certificate is written");
            std::fs::write(&key, key_pem).expect("the key is written");
            // PostgreSQL refuses a key that others may read.
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600))
                .expect("the key's mode");
            if is_root() {
                let chown = Command::new("chown")
                    .arg("postgres:")
                    .args([&cert, &key])
                    .status()
                    .expect("chown runs");
                assert!(chown.success(), "the key cannot be given to postgres");
            }
            format!(
                "-c ssl=on -c ssl_cert_file={} -c ssl_key_file={}",
                cert.display(),
                key.display()
            )
        })
    }

    /// Makes a cluster, asks `options` for its server options (given the cluster's
    /// directory, to write files into), and starts it.
    fn start_with(options: impl FnOnce(&Path) -> String) -> Option<TestCluster> {
        let Some(bin) = binaries() else {
            return skip("PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb)");
        };
        let dir = tempfile::tempdir().expect("a temporary directory");
        if is_root() {
            let chown = Command::new("chown")
                .args(["-R", "postgres:"])
                .arg(dir.path())
                .status()
                .expect("chown runs");
            assert!(
                chown.success(),
                "the cluster's directory cannot be given to postgres"
            );
        }
        let data = dir.path().join("data");
        let data_str = data.to_str().expect("a UTF-8 temporary path");
        let initdb = command(
            &bin.join("initdb"),
            &[
                "-D",
                data_str,
                "-U",
                "weld",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-locale",
                "-N",
            ],
        )
        .stdout(Stdio::null())
        .status()
        .expect("initdb runs");
        assert!(initdb.success(), "initdb failed");
        let options = options(dir.path());
        let cluster = TestCluster {
            port: free_port(),
            dir,
            bin,
            watchdog: Mutex::new(None),
            options,
        };
        cluster.serve();
        Some(cluster)
    }

    /// Starts the server on its port and waits until it accepts connections.
    fn serve(&self) {
        let postgres = self.bin.join("postgres");
        let dir = self.dir.path().to_str().expect("a UTF-8 temporary path");
        // The shell starts the server and waits for a line on its input, or for its input to
        // close (the test process is gone, or the cluster dropped). Then it stops the server at
        // once and waits for it, and removes the cluster's files unless the line says `keep`
        // (a restart).
        let script = format!(
            "{postgres} -D {dir}/data -p {port} -k {dir} -c listen_addresses=127.0.0.1 \
             -c max_connections=300 -c shared_buffers=32MB {options} > {dir}/server.log 2>&1 & \
             server=$!; read order; kill -QUIT $server; wait $server; \
             [ \"$order\" = keep ] || rm -rf {dir}",
            postgres = postgres.display(),
            port = self.port,
            options = self.options,
        );
        let sh = Path::new("/bin/sh");
        let child = command(sh, &["-c", &script])
            .stdin(Stdio::piped())
            .spawn()
            .expect("the server starts");
        *self.watchdog.locked() = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "PostgreSQL did not start: {}",
                std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        // Accepting a socket is not accepting connections yet: wait for a real one.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = command(
                &self.bin.join("pg_isready"),
                &["-h", "127.0.0.1", "-p", &self.port.to_string()],
            )
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
            if ready {
                break;
            }
            assert!(Instant::now() < deadline, "PostgreSQL never became ready");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the server at once, as a crash would (SIGQUIT: no checkpoint), waits for it, and
    /// removes the cluster's files.
    pub fn stop(&self) {
        self.order(b"\n");
    }

    /// Stops the server at once, as a crash would, and starts it again on the same files and
    /// port: what `pg_ctl restart -m immediate` does.
    pub fn restart_immediate(&self) {
        self.down_for(Duration::ZERO);
    }

    /// Stops the server at once, as a crash would, keeps it down for `outage`, and starts it
    /// again on the same files and port.
    pub fn down_for(&self, outage: Duration) {
        self.down_for_then(outage, || {});
    }

    /// [`TestCluster::down_for`], calling `down` once the server is stopped.
    pub fn down_for_then(&self, outage: Duration, down: impl FnOnce()) {
        self.order(b"keep\n");
        down();
        std::thread::sleep(outage);
        self.serve();
    }

    fn order(&self, line: &[u8]) {
        if let Some(mut child) = self.watchdog.locked().take() {
            if let Some(mut stdin) = child.stdin.take() {
                let _ = stdin.write_all(line);
            }
            let _ = child.wait();
        }
    }

    /// The URL of database `database` on this cluster.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://weld@127.0.0.1:{}/{database}", self.port)
    }

    /// Creates database `name`.
    ///
    /// # Panics
    ///
    /// When the cluster refuses.
    pub async fn create_database(&self, name: &str) {
        let (client, connection) =
            tokio_postgres::connect(&self.url("postgres"), tokio_postgres::NoTls)
                .await
                .expect("a connection to the test cluster");
        let connection = tokio::spawn(connection);
        let name = crate::sql::identifier(name).expect("a database name without NUL");
        client
            .execute(format!("CREATE DATABASE {name}").as_str(), &[])
            .await
            .expect("CREATE DATABASE");
        drop(client);
        let _ = connection.await;
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The cluster this test process shares between its tests, started by the first to ask; `None`
/// where PostgreSQL is not installed.
pub fn shared() -> Option<&'static TestCluster> {
    static CLUSTER: OnceLock<Option<TestCluster>> = OnceLock::new();
    CLUSTER.get_or_init(TestCluster::start).as_ref()
}

/// A [`PostgresStore`] for the store conformance suite: a new database of the shared cluster
/// per case, opened again on the same database to play a restart.
#[derive(Debug, Default)]
pub struct PostgresUnderTest {
    database: Mutex<Option<String>>,
}

impl PostgresUnderTest {
    /// A case's store, its database made at its first open.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl StoreUnderTest for PostgresUnderTest {
    fn available(&self) -> bool {
        shared().is_some()
    }

    async fn open(&self) -> Arc<dyn StreamStore> {
        let cluster = shared().expect("a cluster: `available` said so");
        let existing = self.database.locked().clone();
        let database = match existing {
            Some(database) => database,
            None => {
                static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
                let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let database = format!("case_{}_{n}", std::process::id());
                cluster.create_database(&database).await;
                *self.database.locked() = Some(database.clone());
                database
            }
        };
        let store = PostgresStore::open(&PostgresConfig::new(cluster.url(&database)))
            .await
            .expect("the PostgreSQL store opens");
        Arc::new(store)
    }
}
