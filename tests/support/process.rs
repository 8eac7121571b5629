//! Processes.

use super::*;

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
        Process::spawn_limited(binary, env, dir, None)
    }

    /// The same, with at most `max_files` descriptors open (through `prlimit`, which execs the
    /// binary: the pid is the binary's).
    pub(crate) fn spawn_limited(
        binary: &str,
        env: &[(&str, String)],
        dir: Option<&Path>,
        max_files: Option<u64>,
    ) -> Process {
        let path = binary_path(binary);
        let stderr = NamedTempFile::new().expect("a file for the child's stderr");
        let mut command = match max_files {
            None => Command::new(&path),
            Some(files) => {
                let mut command = Command::new("prlimit");
                command.arg(format!("--nofile={files}:{files}")).arg(&path);
                command
            }
        };
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

    /// Freezes it with SIGSTOP, as a long pause (a VM migrated, a swap storm) would: its sockets
    /// stay open, it answers nothing. [`Process::thaw`] wakes it.
    pub(crate) fn freeze(&self) {
        self.signal("STOP");
    }

    /// Wakes a frozen process with SIGCONT.
    pub(crate) fn thaw(&self) {
        self.signal("CONT");
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

    /// The log lines it writes while `period` passes (from now on).
    pub(crate) async fn lines_logged_during(&self, period: Duration) -> Vec<String> {
        let before = self.logs().lines().count();
        tokio::time::sleep(period).await;
        self.logs()
            .lines()
            .skip(before)
            .map(str::to_owned)
            .collect()
    }

    /// A memory figure of `/proc/<pid>/status` in KiB: `VmRSS` (now) or `VmHWM` (its peak).
    pub(crate) fn memory_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .unwrap_or_else(|e| panic!("{}'s /proc status: {e}", self.name));
        status
            .lines()
            .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no {field} in {}'s /proc status", self.name))
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
        // `WELD_TEST_KEEP_LOGS=<dir>` keeps every child's whole stderr there, also of the
        // processes a test killed and replaced, to read after a failure.
        if let Some(dir) = std::env::var_os("WELD_TEST_KEEP_LOGS") {
            let kept = Path::new(&dir).join(format!("{}-{}.log", self.name, self.child.id()));
            let _ = std::fs::copy(self.stderr.path(), kept);
        }
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
pub(crate) fn line_field<'a>(line: &'a str, key: &str) -> &'a str {
    line.split_whitespace()
        .find_map(|token| token.strip_prefix(key))
        .unwrap_or_else(|| panic!("no {key}... in the line {line:?}"))
}
