//! Test harness: real `dtask` processes on ephemeral ports, each test with
//! its own state directory, killed when the handle drops (pass or fail).

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The `dtask` binary under test.
pub const DTASK: &str = env!("CARGO_BIN_EXE_dtask");

/// A value argument.
pub fn value(v: impl Into<dtask_runtime::value::Value>) -> dtask_runtime::protocol::Arg {
    dtask_runtime::protocol::Arg::Value(dtask_runtime::value::encode(&v.into()).into())
}

/// A tokio runtime for a test that drives the Rust client.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().unwrap()
}

/// An unnamed client of `c`, and the module at `wasm`.
pub async fn connect_with(
    c: &Cluster,
    wasm: &str,
) -> (
    dtask_runtime::client::Client,
    dtask_runtime::module::LocalModule,
) {
    let client = dtask_runtime::client::Client::connect(&c.addr, &c.token(), None)
        .await
        .unwrap();
    let module = dtask_runtime::module::LocalModule::load(wasm.as_ref()).unwrap();
    (client, module)
}

/// The example tasks component.
pub fn tasks_wasm() -> &'static str {
    dtask_guests::TASKS_WASM
}

/// The guest whose tasks coordinate through the SDK (queues, locks,
/// actors, a gather inside a task).
pub fn coord_wasm() -> &'static str {
    dtask_guests::COORD_WASM
}

/// A worker's sandbox under `limits` with the example tasks compiled and
/// linked, for timing runs inside a worker without a cluster.
pub fn tasks_sandbox(
    limits: dtask_runtime::worker::sandbox::Limits,
) -> (
    dtask_runtime::worker::sandbox::Sandbox,
    dtask_runtime::worker::sandbox::Ready,
) {
    module_sandbox(tasks_wasm(), limits)
}

/// A worker's sandbox under `limits` with the component at `path`
/// compiled and linked.
pub fn module_sandbox(
    path: &str,
    limits: dtask_runtime::worker::sandbox::Limits,
) -> (
    dtask_runtime::worker::sandbox::Sandbox,
    dtask_runtime::worker::sandbox::Ready,
) {
    let sandbox = dtask_runtime::worker::sandbox::Sandbox::new("bench", limits, 1).unwrap();
    let bytes = std::fs::read(path).unwrap();
    let compiled = dtask_runtime::module::compile(sandbox.engine(), &bytes, path, None).unwrap();
    let ready = sandbox.prepare(compiled).unwrap();
    (sandbox, ready)
}

/// A `dtask cluster` running for one test.
pub struct Cluster {
    child: Child,
    /// Scheduler address.
    pub addr: String,
    /// The test's state directory.
    pub state: tempfile::TempDir,
    /// What every client command gets: the CA, when the cluster was
    /// started with TLS.
    client_env: Vec<(String, String)>,
}

impl Cluster {
    /// Starts a scheduler and `workers` worker processes of `threads` slots.
    pub fn start(workers: usize, threads: u32) -> Self {
        Self::start_with(workers, threads, &[])
    }

    /// [`Cluster::start`] with more `dtask cluster` flags.
    pub fn start_with(workers: usize, threads: u32, flags: &[&str]) -> Self {
        Self::start_env(workers, threads, flags, &[])
    }

    /// [`Cluster::start_with`] with environment variables for the cluster
    /// (its scheduler and workers).
    pub fn start_env(workers: usize, threads: u32, flags: &[&str], env: &[(&str, &str)]) -> Self {
        let threads = threads.to_string();
        let mut all = vec!["--nthreads", threads.as_str()];
        all.extend_from_slice(flags);
        Self::launch(workers, &all, env, None, false)
    }

    /// The benches' cluster: on its Unix socket as the local default is,
    /// or over loopback TCP with `DTASK_BENCH_TCP=1`.
    pub fn for_bench(workers: usize, threads: u32) -> Self {
        if std::env::var_os("DTASK_BENCH_TCP").is_some() {
            Self::start(workers, threads)
        } else {
            Self::start_on_socket(workers, threads)
        }
    }

    /// [`Cluster::start`] listening on a Unix socket in its state directory
    /// as well (`--socket`), which its workers and clients then use: what
    /// the local default does.
    pub fn start_on_socket(workers: usize, threads: u32) -> Self {
        let threads = threads.to_string();
        Self::launch(workers, &["--nthreads", threads.as_str()], &[], None, true)
    }

    /// A cluster started in `dir`, so that it and its workers read the
    /// `dtask.toml` there (and no other); slots come from that file.
    pub fn start_in(dir: &std::path::Path, workers: usize, flags: &[&str]) -> Self {
        let none = dir.join("no-config-home");
        Self::launch(
            workers,
            flags,
            &[("XDG_CONFIG_HOME", none.to_str().unwrap())],
            Some(dir),
            false,
        )
    }

    fn launch(
        workers: usize,
        flags: &[&str],
        env: &[(&str, &str)],
        cwd: Option<&std::path::Path>,
        on_socket: bool,
    ) -> Self {
        let state = tempfile::tempdir().unwrap();
        let socket = state.path().join("scheduler.sock");
        let mut cmd = Command::new(DTASK);
        if let Some(dir) = cwd {
            cmd.current_dir(dir);
        }

        let mut child = cmd
            .args(["cluster", "--port", "0", "--n-workers"])
            .arg(workers.to_string())
            .args(flags)
            .args(
                on_socket
                    .then(|| [std::ffi::OsStr::new("--socket"), socket.as_os_str()])
                    .into_iter()
                    .flatten(),
            )
            // Benches measure the local default's journal with
            // `DTASK_BENCH_JOURNAL=1`.
            .args(
                (on_socket && std::env::var_os("DTASK_BENCH_JOURNAL").is_some())
                    .then(|| ["--journal".into(), state.path().join("journal")])
                    .into_iter()
                    .flatten(),
            )
            .envs(env.iter().copied())
            .env("DTASK_STATE_DIR", state.path())
            .env("DTASK_DASHBOARD_PORT", "0")
            .env(
                "DTASK_LOG",
                std::env::var("DTASK_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .env_remove("DTASK_SCHEDULER")
            .env_remove("DTASK_TOKEN")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start dtask cluster");
        let stdout = child.stdout.take().unwrap();
        let mut addr =
            first_line(stdout, Duration::from_secs(30)).expect("cluster printed its address");
        if on_socket {
            addr = format!("unix:{}", socket.display());
        }
        // Clients of a TLS cluster need its CA; those of a busy-polling one
        // busy-poll as well.
        let client_env = env
            .iter()
            .filter(|(k, _)| matches!(*k, "DTASK_TLS_CA" | "DTASK_BUSY_POLL"))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let cluster = Self {
            child,
            addr,
            state,
            client_env,
        };
        cluster.wait_for_workers(workers);
        cluster
    }

    /// The cluster's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A `dtask` command aimed at this cluster.
    pub fn cmd(&self) -> Command {
        let mut c = Command::new(DTASK);
        c.env("DTASK_STATE_DIR", self.state.path())
            .env("DTASK_DASHBOARD_PORT", "0")
            .env("DTASK_SCHEDULER", &self.addr)
            .env_remove("DTASK_TOKEN")
            .env_remove("DTASK_CLIENT")
            .envs(self.client_env.iter().map(|(k, v)| (k, v)));
        c
    }

    /// A `dtask` command aimed at this cluster without its TLS CA, if it
    /// has one.
    pub fn cmd_without_tls(&self) -> Command {
        let mut c = self.cmd();
        c.env_remove("DTASK_TLS_CA");
        c
    }

    /// Runs `dtask ARGS` with `stdin`, returning its output.
    pub fn run(&self, args: &[&str], stdin: &str) -> Output {
        run_with_stdin(self.cmd().args(args), stdin)
    }

    /// Runs `dtask ARGS`, expects success and returns trimmed stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args, "");
        assert!(
            out.status.success(),
            "dtask {args:?} failed ({:?}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .unwrap()
            .trim_end()
            .to_string()
    }

    /// Submits `FUNCTION ARGS` of the example tasks and returns the key.
    pub fn submit(&self, function: &str, args: &[&str]) -> String {
        self.submit_to(tasks_wasm(), function, args)
    }

    /// Submits `FUNCTION ARGS` of the component at `module` and returns
    /// the key.
    pub fn submit_to(&self, module: &str, function: &str, args: &[&str]) -> String {
        let mut all = vec!["submit", module, function];
        all.extend_from_slice(args);
        self.ok(&all)
    }

    /// The cluster token from the state directory.
    pub fn token(&self) -> String {
        token_in(self.state.path())
    }

    fn wait_for_workers(&self, n: usize) {
        wait_until(Duration::from_secs(30), "workers to register", || {
            worker_pids(self.pid()).len() >= n
        });
        // A submitted task proves the workers have joined.
        let key = self.submit("inc", &["0"]);
        assert_eq!(self.ok(&["gather", &key]), "1");
        self.ok(&["release", &key]);
    }
}

/// A worker process started beside a cluster's own; killed when dropped.
pub struct ExtraWorker(Child);

impl Drop for ExtraWorker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Cluster {
    /// Starts one more `dtask worker` with `flags`, joining this cluster
    /// (in the background: wait for it in `dtask workers`).
    pub fn extra_worker(&self, flags: &[&str]) -> ExtraWorker {
        let child = Command::new(DTASK)
            .arg("worker")
            .args(flags)
            .args(["--scheduler", &self.addr])
            .env("DTASK_STATE_DIR", self.state.path())
            .env("DTASK_DASHBOARD_PORT", "0")
            .env("DTASK_LOG", "warn")
            .spawn()
            .expect("start a worker");
        ExtraWorker(child)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let workers = worker_pids(self.pid());
        let _ = self.child.kill();
        let _ = self.child.wait();
        for pid in workers {
            // SAFETY: sending SIGKILL to a pid that was our worker child.
            unsafe {
                libc::kill(pid as i32, libc::SIGKILL);
            }
        }
    }
}

/// Direct children of `pid`.
pub fn worker_pids(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for t in tasks.flatten() {
        if let Ok(s) = std::fs::read_to_string(t.path().join("children")) {
            out.extend(s.split_whitespace().filter_map(|p| p.parse::<u32>().ok()));
        }
    }
    out
}

/// Whether a process is alive (and not a zombie).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !s
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z'),
        Err(_) => false,
    }
}

/// Polls `cond` until it holds, failing the test after `limit`.
pub fn wait_until(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The lines a reader produces, as they come, on a channel.
pub fn lines_of(r: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

/// The first line a reader produces, within `limit`.
pub fn first_line(r: impl std::io::Read + Send + 'static, limit: Duration) -> Option<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let mut reader = BufReader::new(r);
        let _ = reader.read_line(&mut line);
        let _ = tx.send(line.trim().to_string());
        // Keep draining so the writer never blocks on a full pipe.
        let _ = std::io::copy(&mut reader, &mut std::io::sink());
    });
    rx.recv_timeout(limit).ok().filter(|l| !l.is_empty())
}

/// Runs a command feeding `stdin`.
pub fn run_with_stdin(cmd: &mut Command, stdin: &str) -> Output {
    start_with_stdin(cmd, stdin)
        .rx
        .recv()
        .expect("wait for dtask")
}

/// A command running on its own, `stdin` fed to it and its output
/// collected, to be awaited with a deadline.
pub struct Started {
    pid: u32,
    rx: mpsc::Receiver<Output>,
}

/// Starts a command feeding `stdin`; stdout and stderr are captured.
pub fn start_with_stdin(cmd: &mut Command, stdin: &str) -> Started {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn dtask");
    let pid = child.id();
    let mut pipe = child.stdin.take().unwrap();
    let input = stdin.to_string();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let writer = std::thread::spawn(move || {
            let _ = pipe.write_all(input.as_bytes());
        });
        let out = child.wait_with_output().expect("wait for dtask");
        let _ = writer.join();
        let _ = tx.send(out);
    });
    Started { pid, rx }
}

impl Started {
    /// Its output once it exits, within `limit` (killed, and a panic
    /// naming `what`, past it).
    pub fn output_within(self, limit: Duration, what: &str) -> Output {
        match self.rx.recv_timeout(limit) {
            Ok(out) => out,
            Err(_) => {
                let _ = Command::new("kill")
                    .args(["-9", &self.pid.to_string()])
                    .status();
                panic!("timed out waiting for {what}");
            }
        }
    }
}

/// Lossy stderr of an output.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Lossy stdout of an output.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Runs `dtask ARGS` against a scheduler address where nothing listens:
/// exit 2 there proves the CLI refused before contacting anyone.
pub fn dtask_nowhere(args: &[&str]) -> Output {
    let state = tempfile::tempdir().unwrap();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = closed.local_addr().unwrap().to_string();
    drop(closed);
    Command::new(DTASK)
        .args(args)
        .env("DTASK_STATE_DIR", state.path())
        .env("DTASK_DASHBOARD_PORT", "0")
        .env("DTASK_SCHEDULER", addr)
        .env("DTASK_TOKEN", "t")
        .env("DTASK_RECONNECT_GRACE", "300ms")
        .output()
        .unwrap()
}

/// The cluster token a scheduler keeps in state directory `state`.
pub fn token_in(state: &std::path::Path) -> String {
    std::fs::read_to_string(state.join("token"))
        .unwrap()
        .trim()
        .to_string()
}

/// A scheduler and separate worker processes sharing one state directory,
/// so the scheduler can be killed and restarted on the same port.
pub struct Pieces {
    /// The shared state directory.
    pub state: tempfile::TempDir,
    /// The scheduler's address.
    pub addr: String,
    /// The scheduler process.
    pub scheduler: Child,
    /// Worker processes, in start order (killed ones included).
    pub workers: Vec<Child>,
    /// Environment of every scheduler start (fault injection).
    scheduler_env: Vec<(String, String)>,
}

impl Pieces {
    /// A journaled scheduler and `workers` workers of one slot each.
    pub fn start(workers: usize) -> Self {
        Self::start_env(workers, &[])
    }

    /// [`Pieces::start`] with environment variables for the scheduler,
    /// kept for its restarts (`DTASK_FAULT_…`).
    pub fn start_env(workers: usize, env: &[(&str, &str)]) -> Self {
        let state = tempfile::tempdir().unwrap();
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let (scheduler, addr) = scheduler_env(state.path(), "0", &[], &env);
        let mut p = Self {
            state,
            addr,
            scheduler,
            workers: Vec::new(),
            scheduler_env: env,
        };
        for _ in 0..workers {
            p.add_worker();
        }
        p.wait_for_workers(workers);
        p
    }

    /// The cluster token from the shared state directory.
    pub fn token(&self) -> String {
        token_in(self.state.path())
    }

    /// Starts one more single-slot worker (it joins in the background).
    pub fn add_worker(&mut self) {
        let w = self
            .command()
            .args(["worker", "--nthreads", "1", "--reconnect-grace", "60s"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        self.workers.push(w);
    }

    /// Kills the `i`th worker started outright.
    pub fn kill_worker(&mut self, i: usize) {
        let _ = self.workers[i].kill();
        let _ = self.workers[i].wait();
    }

    /// Waits until exactly `n` workers are connected.
    pub fn wait_for_workers(&self, n: usize) {
        wait_until(Duration::from_secs(30), "workers to join", || {
            let out = self.run(&["workers"]);
            out.status.success() && stdout(&out).lines().count() == n
        });
    }

    /// Waits until the journal (as `dtask journal export` reads it) records
    /// every one of `keys` finished: the scheduler syncs within its
    /// --journal-sync interval.
    pub fn wait_journaled(&self, keys: &[String]) {
        wait_journaled(&self.journal(), keys);
    }

    /// `dtask workers --json`, one value per worker.
    pub fn workers_json(&self) -> Vec<serde_json::Value> {
        let out = self.run(&["workers", "--json"]);
        if !out.status.success() {
            return Vec::new();
        }
        stdout(&out)
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// A `dtask` command aimed at this scheduler.
    pub fn command(&self) -> Command {
        let mut c = Command::new(DTASK);
        c.env("DTASK_STATE_DIR", self.state.path())
            .env("DTASK_DASHBOARD_PORT", "0")
            .env("DTASK_SCHEDULER", &self.addr)
            .env("DTASK_LOG", "warn")
            .env_remove("DTASK_TOKEN")
            .env_remove("DTASK_CLIENT");
        c
    }

    /// Runs `dtask ARGS`.
    pub fn run(&self, args: &[&str]) -> Output {
        run_with_stdin(self.command().args(args), "")
    }

    /// Runs `dtask ARGS`, expects success, returns trimmed stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(out.status.success(), "dtask {args:?}: {}", stderr(&out));
        stdout(&out).trim_end().to_string()
    }

    /// The journal directory.
    pub fn journal(&self) -> std::path::PathBuf {
        self.state.path().join("journal")
    }

    /// Kills the scheduler outright and starts it again on the same port.
    pub fn restart_scheduler(&mut self) {
        self.kill_scheduler();
        self.start_scheduler();
    }

    /// Kills the scheduler outright.
    pub fn kill_scheduler(&mut self) {
        let _ = self.scheduler.kill();
        let _ = self.scheduler.wait();
    }

    /// Starts the scheduler again on its port and journal.
    pub fn start_scheduler(&mut self) {
        self.start_scheduler_with(&[]);
    }

    /// [`Pieces::start_scheduler`] with more flags.
    pub fn start_scheduler_with(&mut self, flags: &[&str]) {
        let port = self.addr.rsplit(':').next().unwrap().to_string();
        let (s, addr) = scheduler_env(self.state.path(), &port, flags, &self.scheduler_env);
        assert_eq!(addr, self.addr);
        self.scheduler = s;
    }
}

impl Drop for Pieces {
    fn drop(&mut self) {
        for c in self.workers.iter_mut().chain([&mut self.scheduler]) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Starts `dtask scheduler` on `port` with its journal in `state`.
pub fn scheduler(state: &std::path::Path, port: &str) -> (Child, String) {
    scheduler_with(state, port, &[])
}

/// [`scheduler`] with more flags.
pub fn scheduler_with(state: &std::path::Path, port: &str, flags: &[&str]) -> (Child, String) {
    scheduler_env(state, port, flags, &[])
}

/// [`scheduler_with`] with environment variables.
pub fn scheduler_env(
    state: &std::path::Path,
    port: &str,
    flags: &[&str],
    env: &[(String, String)],
) -> (Child, String) {
    let mut child = Command::new(DTASK)
        .args(["scheduler", "--port", port, "--journal"])
        .arg(state.join("journal"))
        .args(flags)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env("DTASK_STATE_DIR", state)
        .env("DTASK_DASHBOARD_PORT", "0")
        .env("DTASK_LOG", "warn")
        .env_remove("DTASK_TOKEN")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let addr = first_line(child.stdout.take().unwrap(), Duration::from_secs(30))
        .expect("the scheduler printed its address");
    (child, addr)
}

/// A `/proc/PID/status` field in MiB (VmRSS, VmHWM).
pub fn mib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib / 1024
}

/// A graph of `chains` chains of `links` links for chaos runs: link i of
/// chain c is `add(@link(i-1), @spin(ms))` (a spin of `ms` milliseconds
/// gives `ms`), so link i must hold `c + ms × (i + 1)`. Returns every
/// task, dependencies first, and each link's expected value.
pub fn chain_graph(
    module: &dtask_runtime::module::LocalModule,
    chains: i64,
    links: i64,
    ms: i64,
) -> (
    Vec<dtask_runtime::protocol::TaskSpec>,
    std::collections::HashMap<String, i64>,
) {
    use dtask_runtime::client::{SubmitOptions, task_spec};
    use dtask_runtime::protocol::Arg;
    let int = |i: i64| Arg::Value(dtask_runtime::value::encode(&i.into()).into());
    let impure = SubmitOptions {
        pure: false,
        ..SubmitOptions::default()
    };
    let mut specs = Vec::new();
    let mut expected = std::collections::HashMap::new();
    for c in 0..chains {
        let mut prev = int(c);
        for i in 0..links {
            let spin = task_spec(module.hash(), "spin", vec![int(ms)], &impure);
            let link = task_spec(
                module.hash(),
                "add",
                vec![prev, Arg::Future(spin.key.clone())],
                &impure,
            );
            prev = Arg::Future(link.key.clone());
            expected.insert(link.key.clone(), c + ms * (i + 1));
            specs.push(spin);
            specs.push(link);
        }
    }
    (specs, expected)
}

/// The records of the journal in `dir`, as `dtask journal export` prints
/// them (empty if it cannot be read now, e.g. mid-write).
pub fn journal_records(dir: &std::path::Path) -> Vec<serde_json::Value> {
    let out = Command::new(DTASK)
        .args(["journal", "export"])
        .arg(dir)
        .output()
        .unwrap();
    if !out.status.success() {
        return Vec::new();
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .map(|mut v| v["record"].take())
        .collect()
}

/// Waits until the journal in `dir` records every one of `keys` finished.
pub fn wait_journaled(dir: &std::path::Path, keys: &[String]) {
    wait_journal(dir, keys, true);
}

/// Waits until the journal in `dir` knows every one of `keys` (finished
/// with `finished`, else in any state).
pub fn wait_journal(dir: &std::path::Path, keys: &[String], finished: bool) {
    wait_until(
        Duration::from_secs(30),
        "the journal to record the keys",
        || {
            // The last record of each key wins; records after a task's
            // first name it by its submission number.
            let mut seen = std::collections::HashMap::new();
            let mut keys_by_seq = std::collections::HashMap::new();
            for r in journal_records(dir) {
                let (key, status) = if let Some(t) = r.get("Task") {
                    let key = t["spec"]["key"].as_str().map(str::to_string);
                    keys_by_seq.insert(t["seq"].as_u64(), key.clone());
                    (key, &t["status"])
                } else if let Some(s) = r.get("Status") {
                    let key = keys_by_seq.get(&s["seq"].as_u64()).cloned().flatten();
                    (key, &s["status"])
                } else {
                    continue;
                };
                if let Some(k) = key {
                    seen.insert(k.to_string(), status["state"].get("Finished").is_some());
                }
            }
            keys.iter()
                .all(|k| seen.get(k).is_some_and(|f| *f || !finished))
        },
    );
}

/// (status, body) of `GET url`, with `headers`.
pub fn http_get(url: &str, headers: &[(&str, &str)]) -> (u16, String) {
    try_http_get(url, headers).unwrap_or_else(|| panic!("no HTTP answer from {url}"))
}

/// Like [`http_get`], `None` when nothing answers.
pub fn try_http_get(url: &str, headers: &[(&str, &str)]) -> Option<(u16, String)> {
    let rest = url.strip_prefix("http://").expect("an http URL");
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let mut s = std::net::TcpStream::connect(host).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    std::io::Write::write_all(&mut s, req.as_bytes()).ok()?;
    // Read to the end of the body (Content-Length), or of the connection.
    let mut all = Vec::new();
    let mut buf = [0u8; 16384];
    loop {
        if let Some(at) = all.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&all[..at]).to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|n| n.trim().parse::<usize>().ok());
            if length.is_some_and(|n| all.len() >= at + 4 + n) {
                break;
            }
        }
        match std::io::Read::read(&mut s, &mut buf) {
            Ok(0) => break,
            Ok(n) => all.extend_from_slice(&buf[..n]),
            Err(_) => return None,
        }
    }
    let all = String::from_utf8_lossy(&all).into_owned();
    let (head, body) = all.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    Some((status, body.to_string()))
}

/// A shell command line run through `sh -c`, with the environment `like`
/// was given (a cluster's [`Cluster::cmd`], say).
pub fn sh(like: &Command, script: &str) -> Command {
    let mut sh = Command::new("sh");
    sh.arg("-c").arg(script);
    for (k, v) in like.get_envs() {
        match v {
            Some(v) => sh.env(k, v),
            None => sh.env_remove(k),
        };
    }
    sh
}

/// Parses each line of `s` as JSON.
pub fn json_lines(s: &str) -> Vec<serde_json::Value> {
    s.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}")))
        .collect()
}

/// The state `dtask status` gives `key`.
pub fn status(c: &Cluster, key: &str) -> String {
    c.ok(&["status", key])
        .split('\t')
        .nth(1)
        .unwrap()
        .to_string()
}

/// The data address of the worker `key` ran on (`dtask status --json`
/// names it; `dtask workers --json` gives its address). A small result
/// lives at the scheduler, so `dtask who-has` names no worker for it.
#[allow(dead_code)]
pub fn ran_on(c: &Cluster, key: &str) -> String {
    let status = &json_lines(&c.ok(&["status", "--json", key]))[0];
    let name = status["worker"]
        .as_str()
        .unwrap_or_else(|| panic!("no worker in {status}"));
    json_lines(&c.ok(&["workers", "--json"]))
        .iter()
        .find(|w| w["name"] == name)
        .unwrap_or_else(|| panic!("no worker named {name}"))["address"]
        .as_str()
        .unwrap()
        .to_string()
}

/// The compiled artifacts (`*.cwasm`) anywhere under `dir`.
pub fn compiled_artifacts(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(compiled_artifacts(&path));
        } else if path.extension().is_some_and(|e| e == "cwasm") {
            out.push(path);
        }
    }
    out
}
