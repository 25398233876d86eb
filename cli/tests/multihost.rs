//! Four hosts on one machine: a scheduler, two workers and a client, each
//! in a network namespace of its own on a bridge, with TLS and separate
//! credentials. Results cross hosts; a worker's link is cut mid-graph (its
//! tasks are redone on the other host once `--worker-timeout` passes) and
//! restored (the worker rejoins). And a client waiting on a scheduler
//! whose link is cut notices the silence and gives up, rather than
//! waiting forever. Needs root and iproute2; elsewhere each test says
//! loudly that it was skipped.

mod common;

use common::*;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

/// The namespaces, bridge and links of one test, removed when it ends.
struct Net {
    tag: String,
    subnet: String,
    hosts: Vec<String>,
}

impl Net {
    /// Makes namespaces `names` on a bridge, host `i` at `SUBNET.(11+i)`.
    /// `None`: this machine cannot (not root, no iproute2, no namespaces).
    fn make(names: &[&str]) -> Option<Self> {
        // Apart from any other test's: this process's and a count.
        static MADE: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = MADE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let id = std::process::id() % 100_000;
        let net = Net {
            tag: format!("dt{id}{n}"),
            subnet: format!("10.{}.{}", 213 + n % 40, id % 250),
            hosts: names.iter().map(|h| format!("dt{id}{n}{h}")).collect(),
        };
        let bridge = net.bridge();
        let mut steps: Vec<Vec<String>> = vec![
            vec![
                "link".into(),
                "add".into(),
                bridge.clone(),
                "type".into(),
                "bridge".into(),
            ],
            vec!["link".into(), "set".into(), bridge.clone(), "up".into()],
        ];
        for (i, ns) in net.hosts.iter().enumerate() {
            let outside = net.link(i);
            let addr = format!("{}/24", net.addr(i));
            steps.extend([
                vec!["netns".into(), "add".into(), ns.clone()],
                vec![
                    "link".into(),
                    "add".into(),
                    outside.clone(),
                    "type".into(),
                    "veth".into(),
                    "peer".into(),
                    "name".into(),
                    "eth0".into(),
                    "netns".into(),
                    ns.clone(),
                ],
                vec![
                    "link".into(),
                    "set".into(),
                    outside.clone(),
                    "master".into(),
                    bridge.clone(),
                ],
                vec!["link".into(), "set".into(), outside, "up".into()],
                ns_ip(ns, &["addr", "add", &addr, "dev", "eth0"]),
                ns_ip(ns, &["link", "set", "eth0", "up"]),
                ns_ip(ns, &["link", "set", "lo", "up"]),
            ]);
        }
        for step in steps {
            let out = Command::new("ip").args(&step).output();
            match out {
                Ok(o) if o.status.success() => {}
                Ok(o) => {
                    eprintln!(
                        "*** SKIPPED the multi-host test: `ip {}` failed: {} ***",
                        step.join(" "),
                        String::from_utf8_lossy(&o.stderr).trim()
                    );
                    return None;
                }
                Err(e) => {
                    eprintln!("*** SKIPPED the multi-host test: no `ip` command ({e}) ***");
                    return None;
                }
            }
        }
        Some(net)
    }

    fn bridge(&self) -> String {
        format!("{}br", self.tag)
    }

    /// The root namespace's end of host `i`'s link.
    fn link(&self, i: usize) -> String {
        format!("{}v{i}", self.tag)
    }

    fn addr(&self, i: usize) -> String {
        format!("{}.{}", self.subnet, 11 + i)
    }

    /// `dtask ARGS` on host `i`.
    fn dtask(&self, i: usize) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.hosts[i], DTASK])
            .env("DTASK_DASHBOARD_PORT", "0")
            .env("DTASK_LOG", "warn")
            .env_remove("DTASK_SCHEDULER")
            .env_remove("DTASK_TOKEN")
            .env_remove("DTASK_WORKER_TOKEN");
        c
    }

    /// Starts a scheduler on host `i` with `flags` (and whatever `more`
    /// sets), its state in `state`, killed with `procs`; its address.
    fn scheduler(
        &self,
        i: usize,
        state: &std::path::Path,
        flags: &[&str],
        procs: &mut Procs,
        more: impl FnOnce(&mut Command),
    ) -> String {
        let mut cmd = self.dtask(i);
        cmd.args(["scheduler", "--host", &self.addr(i), "--port", "0"])
            .args(flags)
            .env("DTASK_STATE_DIR", state)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        more(&mut cmd);
        let mut child = cmd.spawn().unwrap();
        let addr = first_line(child.stdout.take().unwrap(), Duration::from_secs(30))
            .expect("the scheduler printed its address");
        procs.0.push(child);
        addr
    }

    /// Takes host `i`'s link down or up.
    fn set_link(&self, i: usize, up: bool) {
        let out = Command::new("ip")
            .args(["link", "set", &self.link(i), if up { "up" } else { "down" }])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
    }
}

fn ns_ip(ns: &str, args: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = ["-n", ns].iter().map(|s| s.to_string()).collect();
    v.extend(args.iter().map(|s| s.to_string()));
    v
}

impl Drop for Net {
    fn drop(&mut self) {
        for ns in &self.hosts {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge()])
            .output();
    }
}

/// Processes killed when the test ends.
struct Procs(Vec<Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn ok(out: Output, what: &str) -> String {
    assert!(out.status.success(), "{what}: {}", stderr(&out));
    stdout(&out).trim_end().to_string()
}

#[test]
fn four_hosts_with_tls_survive_a_cut_link() {
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("*** SKIPPED the multi-host test: it needs root for network namespaces ***");
        return;
    }
    let Some(net) = Net::make(&["s", "a", "b", "c"]) else {
        return;
    };
    let (sched, wa, wb, client) = (0, 1, 2, 3);
    let dir = tempfile::tempdir().unwrap();
    let tls = dir.path().join("tls");
    let out = Command::new(DTASK)
        .args(["cert", "init"])
        .arg(&tls)
        .args(["--host", &net.addr(sched), "--host", &net.addr(wa)])
        .args(["--host", &net.addr(wb)])
        .output()
        .unwrap();
    ok(out, "dtask cert init");
    let tls_env = |c: &mut Command, serve: bool| {
        c.env("DTASK_TLS_CA", tls.join("ca.pem"));
        if serve {
            c.env("DTASK_TLS_CERT", tls.join("cert.pem"))
                .env("DTASK_TLS_KEY", tls.join("key.pem"));
        }
    };
    let mut procs = Procs(Vec::new());

    // The scheduler, on its host, with a short worker timeout.
    let sched_state = dir.path().join("scheduler");
    let addr = net.scheduler(
        sched,
        &sched_state,
        &["--worker-timeout", "3s"],
        &mut procs,
        |c| tls_env(c, true),
    );
    assert!(addr.starts_with(&net.addr(sched)), "{addr}");
    let token = token_in(&sched_state);
    let worker_token = sched_state.join("worker-token");

    // Workers, each with only the worker credential.
    for (i, name) in [(wa, "a"), (wb, "b")] {
        let mut cmd = net.dtask(i);
        cmd.args(["worker", "--host", &net.addr(i), "--scheduler", &addr])
            .args(["--nthreads", "2", "--reconnect-grace", "5m"])
            .env("DTASK_STATE_DIR", dir.path().join(format!("worker-{name}")))
            .env("DTASK_WORKER_TOKEN_FILE", &worker_token)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        tls_env(&mut cmd, true);
        procs.0.push(cmd.spawn().unwrap());
    }
    let client_state = dir.path().join("client");
    let dtask = |args: &[&str], stdin: &str| {
        let mut cmd = net.dtask(client);
        cmd.args(args)
            .env("DTASK_STATE_DIR", &client_state)
            .env("DTASK_SCHEDULER", &addr)
            .env("DTASK_TOKEN", &token);
        tls_env(&mut cmd, false);
        run_with_stdin(&mut cmd, stdin)
    };
    let workers = || -> Vec<String> {
        let out = dtask(&["workers"], "");
        stdout(&out).lines().map(str::to_string).collect()
    };
    wait_until(Duration::from_secs(30), "both workers to join", || {
        workers().len() == 2
    });
    let listed = workers().join("\n");
    for i in [wa, wb] {
        assert!(listed.contains(&net.addr(i)), "{listed}");
    }

    // A map across both hosts, gathered on the fourth.
    let input: String = (1..=200).map(|i| format!("{i}\n")).collect();
    let keys = ok(dtask(&["map", tasks_wasm(), "inc"], &input), "map");
    let sum: u64 = ok(dtask(&["gather"], &keys), "gather")
        .lines()
        .map(|l| l.parse::<u64>().unwrap())
        .sum();
    assert_eq!(sum, (2..=201).sum::<u64>());

    // A dependency whose input lives on the other host: big enough (5,000
    // characters) that it is kept on the worker that made it, where a
    // small result would live at the scheduler. (`--workers` takes a
    // worker's data address, as `dtask workers` lists it.)
    let on = |i: usize| -> String {
        let host = format!("{}:", net.addr(i));
        workers()
            .iter()
            .find_map(|l| {
                l.split('\t')
                    .nth(1)
                    .filter(|a| a.starts_with(&host))
                    .map(str::to_string)
            })
            .unwrap_or_else(|| panic!("no worker at {host} in {:?}", workers()))
    };
    let a = ok(
        dtask(
            &[
                "submit",
                "--workers",
                &on(wa),
                tasks_wasm(),
                "repeat",
                "x",
                "5000",
            ],
            "",
        ),
        "submit on a",
    );
    let b = ok(
        dtask(
            &[
                "submit",
                "--workers",
                &on(wb),
                tasks_wasm(),
                "repeat",
                &format!("@{a}"),
                "2",
            ],
            "",
        ),
        "submit on b",
    );
    let twice = ok(dtask(&["gather", "-r", &b], ""), "gather b");
    assert_eq!(twice, "x".repeat(10_000));
    let who = ok(dtask(&["who-has", &a, &b], ""), "who-has");
    assert!(who.contains(&on(wa)) && who.contains(&on(wb)), "{who}");

    // Mid-graph, worker a's link goes down: once the scheduler has given
    // up on it, its tasks run on b, and every result is there.
    let slow: String = (0..16).map(|_| "400\n").collect();
    let keys = ok(
        dtask(&["map", "--pure=false", tasks_wasm(), "spin"], &slow),
        "map spin",
    );
    wait_until(
        Duration::from_secs(30),
        "tasks to run on both hosts",
        || {
            let out = dtask(&["workers"], "");
            stdout(&out).lines().all(|l| !l.contains("executing=0"))
        },
    );
    net.set_link(wa, false);
    wait_until(
        Duration::from_secs(30),
        "the scheduler to give up on a",
        || {
            let w = workers();
            w.len() == 1 && w[0].contains(&format!("{}:", net.addr(wb)))
        },
    );
    let gathered = ok(dtask(&["gather"], &keys), "gather after the cut");
    assert_eq!(gathered.lines().count(), 16, "{gathered}");

    // The link comes back: a rejoins, and serves again.
    net.set_link(wa, true);
    wait_until(Duration::from_secs(60), "a to rejoin", || {
        workers().len() == 2
    });
    let again = ok(
        dtask(
            &["submit", "--workers", &on(wa), tasks_wasm(), "inc", "9"],
            "",
        ),
        "submit on a again",
    );
    assert_eq!(ok(dtask(&["gather", &again], ""), "gather on a"), "10");
}

/// A client waiting with nothing to send (a `gather` reading keys from a
/// pipe that stays open) whose host's link is cut notices that the
/// scheduler went silent, by TCP keepalive probes that go unanswered,
/// instead of waiting on a connection that will never speak again: it
/// tries to reconnect for its grace, then exits 3 saying why.
#[test]
fn a_waiting_client_whose_link_is_cut_gives_up_and_says_so() {
    use std::io::Write;
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("*** SKIPPED the cut-link client test: it needs root for network namespaces ***");
        return;
    }
    let Some(net) = Net::make(&["s", "c"]) else {
        return;
    };
    let (sched, client) = (0, 1);
    let dir = tempfile::tempdir().unwrap();
    let mut procs = Procs(Vec::new());
    let sched_state = dir.path().join("scheduler");
    let addr = net.scheduler(sched, &sched_state, &[], &mut procs, |_| {});
    let token = token_in(&sched_state);
    procs.0.push(
        net.dtask(sched)
            .args(["worker", "--scheduler", &addr, "--nthreads", "1"])
            .env("DTASK_STATE_DIR", dir.path().join("worker"))
            .env("DTASK_WORKER_TOKEN_FILE", sched_state.join("worker-token"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    let on_client = |args: &[&str]| {
        let mut cmd = net.dtask(client);
        cmd.args(args)
            .env("DTASK_STATE_DIR", dir.path().join("client"))
            .env("DTASK_SCHEDULER", &addr)
            .env("DTASK_TOKEN", &token)
            .env("DTASK_RECONNECT_GRACE", "2s");
        cmd
    };
    let key = ok(
        run_with_stdin(&mut on_client(&["submit", tasks_wasm(), "inc", "41"]), ""),
        "submit",
    );
    let mut gather = on_client(&["gather"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut keys_in = gather.stdin.take().unwrap();
    writeln!(keys_in, "{key}").unwrap();
    // Printed: the gather is connected, and now waits for more keys.
    let printed = first_line(gather.stdout.take().unwrap(), Duration::from_secs(60));
    assert_eq!(printed.as_deref().map(str::trim), Some("42"));
    let mut errors = gather.stderr.take().unwrap();
    procs.0.push(gather);
    net.set_link(client, false);
    let began = std::time::Instant::now();
    let mut status = None;
    wait_until(
        Duration::from_secs(120),
        "the gather to give up on a silent scheduler",
        || {
            status = procs.0.last_mut().unwrap().try_wait().unwrap();
            status.is_some()
        },
    );
    let mut err = String::new();
    std::io::Read::read_to_string(&mut errors, &mut err).unwrap();
    eprintln!("the gather gave up after {:?}", began.elapsed());
    assert_eq!(status.and_then(|s| s.code()), Some(3), "{err}");
    assert!(err.contains("scheduler"), "{err}");
    drop(keys_in);
}
