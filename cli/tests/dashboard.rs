//! The web dashboard and `/metrics`, through a real cluster: HTTP from the
//! test itself, and a real headless Chromium driven over the DevTools
//! protocol.

mod common;

use common::{Cluster, http_get as get, tasks_wasm, try_http_get as try_get, wait_until};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn info(c: &Cluster) -> serde_json::Value {
    serde_json::from_str(&c.ok(&["info"])).unwrap()
}

fn dashboard_url(c: &Cluster) -> String {
    info(c)["dashboard"]
        .as_str()
        .expect("info names the dashboard")
        .to_string()
}

#[test]
fn metrics_and_json_need_the_token_and_agree_with_info() {
    let c = Cluster::start(2, 1);
    let base = dashboard_url(&c);
    let bearer = format!("Bearer {}", c.token());
    let auth = [("Authorization", bearer.as_str())];
    // The cluster's start-up check ran one task and released it.
    let counts = || -> serde_json::Value {
        serde_json::from_str(&get(&format!("{base}json/counts.json"), &auth).1).unwrap()
    };
    wait_until(
        Duration::from_secs(10),
        "the start-up task to be forgotten",
        || counts()["tasks"]["memory"] == 0,
    );
    let input: String = (1..=40).map(|i| format!("{i}\n")).collect();
    let out = c.run(&["map", tasks_wasm(), "inc"], &input);
    assert!(out.status.success());
    let keys = String::from_utf8(out.stdout).unwrap();
    let out = c.run(&["gather"], &keys);
    assert!(out.status.success());
    let failed = c.submit("fail", &["kaput"]);
    assert!(!c.run(&["wait", &failed], "").status.success());
    // A name that would add a series of its own to the scrape, unescaped.
    let evil = "q\"} 0\ndtask_scheduler_workers 999\ndtask_queue_length{queue=\"x\\";
    c.ok(&["queue", "put", evil, "1"]);

    let base = dashboard_url(&c);
    assert_eq!(get(&format!("{base}health"), &[]).0, 200);
    for path in ["metrics", "json/counts.json", "", "errors"] {
        let (status, body) = get(&format!("{base}{path}"), &[]);
        assert_eq!(status, 401, "/{path} without a token: {body}");
    }
    let (status, _) = get(
        &format!("{base}metrics"),
        &[("Authorization", "Bearer wrong")],
    );
    assert_eq!(status, 401);
    let (status, text) = get(&format!("{base}metrics"), &auth);
    assert_eq!(status, 200);
    let lines = text.lines().map(|l| Ok(l.to_string()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("valid Prometheus text");
    let sample = |name: &str, label: Option<(&str, &str)>| -> f64 {
        let s = scrape
            .samples
            .iter()
            .find(|s| s.metric == name && label.is_none_or(|(k, v)| s.labels.get(k) == Some(v)))
            .unwrap_or_else(|| panic!("{name} {label:?} in {text}"));
        match s.value {
            prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Untyped(v) => v,
            ref other => panic!("{name}: {other:?}"),
        }
    };
    let i = info(&c);
    assert_eq!(sample("dtask_scheduler_workers", None), 2.0);
    assert_eq!(
        text.lines()
            .filter(|l| l.starts_with("dtask_scheduler_workers "))
            .count(),
        1,
        "{text}"
    );
    assert_eq!(
        text.lines()
            .filter(|l| l.starts_with("dtask_queue_length{"))
            .count(),
        1,
        "{text}"
    );
    assert_eq!(i["workers"], 2);
    let known: f64 = [
        "waiting",
        "processing",
        "memory",
        "erred",
        "cancelled",
        "lost",
        "released",
    ]
    .iter()
    .map(|s| sample("dtask_scheduler_tasks", Some(("state", s))))
    .sum();
    assert_eq!(known, i["tasks"].as_f64().unwrap());
    assert_eq!(
        sample("dtask_scheduler_tasks", Some(("state", "memory"))),
        40.0,
        "{}",
        get(&format!("{base}json/status.json"), &auth).1
    );
    assert_eq!(
        sample("dtask_scheduler_tasks", Some(("state", "erred"))),
        1.0
    );
    // The start-up check's task included.
    assert_eq!(
        sample("dtask_tasks_finished_total", Some(("function", "inc"))),
        41.0
    );
    assert_eq!(
        sample("dtask_tasks_failed_total", Some(("function", "fail"))),
        1.0
    );
    let slots: f64 = scrape
        .samples
        .iter()
        .filter(|s| s.metric == "dtask_worker_slots")
        .map(|s| match s.value {
            prometheus_parse::Value::Gauge(v) => v,
            _ => 0.0,
        })
        .sum();
    assert_eq!(slots, i["nthreads"].as_f64().unwrap());
    assert!(
        scrape
            .samples
            .iter()
            .any(|s| s.metric == "dtask_worker_compute_seconds_total"),
        "{text}"
    );

    // A value moved between workers counts as a transfer of its bytes.
    let workers: Vec<String> = c
        .ok(&["workers", "--json"])
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["address"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), vec![7u8; 300_000]).unwrap();
    let path = file.path().to_str().unwrap();
    let data = c.ok(&["scatter", "--workers", &workers[0], path]);
    let sum = c.ok(&[
        "submit",
        "--workers",
        &workers[1],
        tasks_wasm(),
        "sum-bytes",
        &format!("@{data}"),
    ]);
    assert_eq!(c.ok(&["gather", &sum]), "2100000");
    let transfer_bytes = || -> f64 {
        let (_, text) = get(&format!("{base}metrics"), &auth);
        let lines = text.lines().map(|l| Ok(l.to_string()));
        let scrape = prometheus_parse::Scrape::parse(lines).unwrap();
        scrape
            .samples
            .iter()
            .filter(|s| s.metric == "dtask_worker_transfer_bytes_total")
            .map(|s| match s.value {
                prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Untyped(v) => v,
                _ => 0.0,
            })
            .sum()
    };
    // Workers report it in their next heartbeat (each second).
    wait_until(Duration::from_secs(10), "the transfer in /metrics", || {
        transfer_bytes() >= 300_000.0
    });

    let (status, counts) = get(&format!("{base}json/counts.json"), &auth);
    assert_eq!(status, 200);
    let counts: serde_json::Value = serde_json::from_str(&counts).unwrap();
    assert_eq!(
        counts["tasks"]["memory"], 42,
        "the map, the scattered value and its sum"
    );
    assert_eq!(counts["tasks"]["erred"], 1);
    assert_eq!(counts["workers"], 2);

    // The failure is listed, and its task page has the guest's message.
    // Primitives are listed with their state.
    c.ok(&["queue", "put", "jobs", "1"]);
    c.ok(&["queue", "put", "jobs", "2"]);
    c.ok(&["lock", "acquire", "gate"]);
    let (_, prims) = get(&format!("{base}json/primitives.json"), &auth);
    let prims: serde_json::Value = serde_json::from_str(&prims).unwrap();
    assert_eq!(prims["queues"][0][0], "jobs", "{prims}");
    assert_eq!(prims["queues"][0][1], 2, "{prims}");
    assert_eq!(prims["locks"][0][0], "gate", "{prims}");
    assert_eq!(prims["locks"][0][1].as_array().unwrap().len(), 1, "{prims}");

    let (_, errors) = get(&format!("{base}json/errors.json"), &auth);
    let errors: serde_json::Value = serde_json::from_str(&errors).unwrap();
    assert_eq!(errors[0]["key"], failed.as_str());
    let (_, task) = get(&format!("{base}json/task.json?key={failed}"), &auth);
    let task: serde_json::Value = serde_json::from_str(&task).unwrap();
    assert_eq!(task["function"], "fail");
    assert!(
        task["error"]["message"].as_str().unwrap().contains("kaput"),
        "{task}"
    );

    // `status --json` carries the same task's timings.
    let status: serde_json::Value =
        serde_json::from_str(&c.ok(&["status", "--json", &failed])).unwrap();
    for field in ["submitted", "started", "finished"] {
        let t = status[field]
            .as_str()
            .unwrap_or_else(|| panic!("{field} in {status}"));
        assert!(t.starts_with("20") && t.ends_with('Z'), "{t}");
    }
    assert!(status["duration_s"].as_f64().unwrap() >= 0.0);
    assert!(status["worker"].is_string(), "{status}");
    assert_eq!(status["retries"], 0);
}

#[test]
fn a_login_code_works_once() {
    let c = Cluster::start(1, 1);
    let link = c.ok(&["dashboard"]);
    let link = link.trim();
    assert!(link.contains("/login?code="), "{link}");
    let (status, _) = get(&format!("{link}&next=/errors"), &[]);
    assert_eq!(status, 303, "the first use redirects with a session");
    let (status, _) = get(link, &[]);
    assert_eq!(status, 401, "a used code is refused");
}

#[test]
fn a_running_task_reports_its_start_before_it_ends() {
    // A one-slot worker computes on the thread that serves its connection:
    // the scheduler must still hear that a task began while it runs.
    let c = Cluster::start(1, 1);
    let key = c.submit("spin", &["1500"]);
    wait_until(
        Duration::from_secs(10),
        "the task to be reported started",
        || {
            let s: serde_json::Value =
                serde_json::from_str(&c.ok(&["status", "--json", &key])).unwrap();
            s["status"] == "processing" && s["started"].is_string()
        },
    );
    c.ok(&["wait", &key]);
}

/// A headless Chromium with the DevTools protocol on a free port.
struct Browser {
    child: Child,
    _profile: tempfile::TempDir,
    socket: tungstenite::WebSocket<TcpStream>,
    next_id: u64,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Browser {
    fn start() -> Option<Self> {
        let bin = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())?;
        let profile = tempfile::tempdir().unwrap();
        let child = Command::new(bin)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                "--remote-debugging-port=0",
                "--window-size=1400,1000",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromium");
        let port_file = profile.path().join("DevToolsActivePort");
        let mut port = String::new();
        wait_until(Duration::from_secs(30), "chromium's DevTools port", || {
            port = std::fs::read_to_string(&port_file)
                .ok()
                .and_then(|s| s.lines().next().map(str::to_string))
                .unwrap_or_default();
            !port.is_empty()
        });
        let mut page = None;
        wait_until(Duration::from_secs(30), "chromium's page target", || {
            let Some((_, list)) = try_get(&format!("http://127.0.0.1:{port}/json/list"), &[])
            else {
                return false;
            };
            let list: serde_json::Value = serde_json::from_str(&list).unwrap_or_default();
            page = list.as_array().and_then(|l| {
                l.iter()
                    .find(|t| t["type"] == "page")
                    .and_then(|t| t["webSocketDebuggerUrl"].as_str().map(str::to_string))
            });
            page.is_some()
        });
        let url = page.unwrap();
        let stream = TcpStream::connect(format!("127.0.0.1:{port}")).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let (socket, _) = tungstenite::client(url.as_str(), stream).expect("DevTools socket");
        Some(Self {
            child,
            _profile: profile,
            socket,
            next_id: 1,
        })
    }

    /// Calls a DevTools method and returns its result.
    fn call(&mut self, method: &str, params: serde_json::Value) -> serde_json::Value {
        let id = self.next_id;
        self.next_id += 1;
        let msg = serde_json::json!({"id": id, "method": method, "params": params});
        self.socket
            .send(tungstenite::Message::Text(msg.to_string().into()))
            .unwrap();
        loop {
            let m = self.socket.read().expect("a DevTools message");
            let Ok(text) = m.into_text() else { continue };
            let v: serde_json::Value = serde_json::from_str(&text).unwrap();
            if v["id"] == id {
                assert!(v.get("error").is_none(), "{method}: {v}");
                return v["result"].clone();
            }
        }
    }

    fn open(&mut self, url: &str) {
        self.call("Page.navigate", serde_json::json!({"url": url}));
    }

    /// The value of a JavaScript expression in the page.
    fn eval(&mut self, expr: &str) -> serde_json::Value {
        let r = self.call(
            "Runtime.evaluate",
            serde_json::json!({"expression": expr, "returnByValue": true}),
        );
        r["result"]["value"].clone()
    }

    fn text(&mut self) -> String {
        self.eval("document.body ? document.body.innerText : ''")
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

#[test]
fn a_browser_logs_in_watches_a_map_and_reads_a_failure() {
    let Some(mut browser) = Browser::start() else {
        eprintln!(
            "\n\n*** SKIPPED: no Chromium at /usr/bin/chromium; `.ci/run` installs Debian's \
             `chromium` package (apt-get install chromium) ***\n"
        );
        return;
    };
    let c = Cluster::start(2, 1);
    let link = c.ok(&["dashboard"]).trim().to_string();
    browser.open(&link);
    let addresses: Vec<String> = c
        .ok(&["workers", "--json"])
        .lines()
        .map(|l| {
            let w: serde_json::Value = serde_json::from_str(l).unwrap();
            w["address"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(addresses.len(), 2);
    wait_until(
        Duration::from_secs(20),
        "the status page with both workers",
        || {
            let t = browser.text();
            addresses.iter().all(|a| t.contains(a.as_str()))
        },
    );

    // A map of slow tasks: the page's count of finished tasks moves.
    let input: String = (0..60).map(|i| format!("{}\n", 100 + i)).collect();
    let mut map = c.cmd();
    map.args(["map", tasks_wasm(), "spin"]);
    let running = common::start_with_stdin(&mut map, &input);
    let count = |b: &mut Browser| -> Option<u64> {
        let v = b.eval("(document.getElementById('finished-total') || {}).textContent");
        v.as_str()?.replace(',', "").parse().ok()
    };
    let mut seen = std::collections::BTreeSet::new();
    let began = Instant::now();
    while seen.len() < 3 && began.elapsed() < Duration::from_secs(60) {
        if let Some(n) = count(&mut browser) {
            seen.insert(n);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        seen.len() >= 3,
        "the finished count changed while the map ran: {seen:?}"
    );
    let out = running.output_within(Duration::from_secs(60), "the map");
    assert!(out.status.success());
    wait_until(
        Duration::from_secs(20),
        "the function's name on the page",
        || browser.text().contains("spin"),
    );

    // A failed task's page shows the guest's panic message.
    let failed = c.submit("fail", &["the-sky-fell"]);
    assert!(!c.run(&["wait", &failed], "").status.success());
    let base = link.split("login").next().unwrap().to_string();
    browser.open(&format!("{base}task/{failed}"));
    wait_until(Duration::from_secs(20), "the failed task's page", || {
        let t = browser.text();
        t.contains("the-sky-fell") && t.contains("erred")
    });
    let shot = browser.call(
        "Page.captureScreenshot",
        serde_json::json!({"format": "png"}),
    );
    let png = base64::Engine::decode(
        &base64::engine::general_purpose::STANDARD,
        shot["data"].as_str().unwrap(),
    )
    .unwrap();
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    std::fs::write(dir.join("dashboard-task.png"), &png).unwrap();
    assert!(png.starts_with(b"\x89PNG"));

    // The browser's session does not make the page open to others.
    let (status, _) = get(&base, &[]);
    assert_eq!(status, 401);
}

#[test]
fn logs_show_what_a_task_wrote_whether_it_failed_or_not() {
    let c = Cluster::start(2, 1);
    let key = c.submit("say", &["to stdout", "to stderr\nline two"]);
    assert_eq!(c.ok(&["gather", &key]), "27");
    assert_eq!(c.ok(&["logs", &key]), "to stderr\nline two");
    assert_eq!(c.ok(&["logs", "--stdout", &key]), "to stdout");
    // A failed task's stderr, the panic message included.
    let failed = c.submit("fail", &["went-wrong"]);
    assert!(!c.run(&["wait", &failed], "").status.success());
    assert!(c.ok(&["logs", &failed]).contains("went-wrong"));
    // A task that wrote nothing prints nothing, and that is all.
    let quiet = c.submit("inc", &["41"]);
    c.ok(&["gather", &quiet]);
    let out = c.run(&["logs", &quiet], "");
    assert_eq!(out.status.code(), Some(0), "{}", common::stderr(&out));
    assert!(out.stdout.is_empty());
    // One whose worker is gone has none to print: said so, exit 1.
    let gpu = c.extra_worker(&["--resources", "GPU=1"]);
    let gone = c.ok(&[
        "submit",
        "--resources",
        "GPU=1",
        tasks_wasm(),
        "say",
        "out",
        "err",
    ]);
    c.ok(&["gather", &gone]);
    drop(gpu);
    common::wait_until(Duration::from_secs(30), "the worker to leave", || {
        // The cluster's own two are left.
        common::json_lines(&c.ok(&["workers", "--json"])).len() == 2
    });
    let out = c.run(&["logs", &gone], "");
    assert_eq!(out.status.code(), Some(1), "{}", common::stderr(&out));
    assert!(common::stderr(&out).contains("no connected worker keeps output"));
    // A key the scheduler does not know is bad input: exit 2, saying so.
    let out = c.run(&["logs", "inc-00000000000000000000000000000000"], "");
    assert_eq!(out.status.code(), Some(2), "{}", common::stderr(&out));
    assert!(common::stderr(&out).contains("unknown key"));
}

#[test]
fn tasks_lists_by_state_and_function_newest_up_to_the_limit() {
    let c = Cluster::start(1, 1);
    let input: String = (1..=5).map(|i| format!("{i}\n")).collect();
    let keys = c.run(&["map", tasks_wasm(), "inc"], &input);
    let keys: Vec<String> = String::from_utf8(keys.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    c.run(&["wait"], &keys.join("\n"));
    let failed = c.submit("fail", &["x"]);
    assert!(!c.run(&["wait", &failed], "").status.success());

    let listed = c.ok(&["tasks", "--function", "inc"]);
    let rows: Vec<Vec<&str>> = listed.lines().map(|l| l.split('\t').collect()).collect();
    assert_eq!(rows.len(), 5, "{listed}");
    assert!(rows.iter().all(|r| r[1] == "finished" && r[2] == "inc"));
    // Oldest first, as submitted.
    let order: Vec<&str> = rows.iter().map(|r| r[0]).collect();
    assert_eq!(order, keys.iter().map(String::as_str).collect::<Vec<_>>());

    let erred = c.ok(&["tasks", "--state", "error", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&erred).unwrap();
    assert_eq!(v["key"], failed.as_str());
    assert_eq!(v["function"], "fail");

    // The newest two, and a note of how many more matched.
    let out = c.run(&["tasks", "--function", "inc", "--limit", "2"], "");
    let shown: Vec<String> = common::stdout(&out)
        .lines()
        .map(|l| l.split('\t').next().unwrap().to_string())
        .collect();
    assert_eq!(shown, keys[3..].to_vec());
    assert!(
        common::stderr(&out).contains("3 more matched"),
        "{}",
        common::stderr(&out)
    );

    let out = c.run(&["tasks", "--state", "sleeping"], "");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        common::stderr(&out).contains("no-worker"),
        "{}",
        common::stderr(&out)
    );
}
