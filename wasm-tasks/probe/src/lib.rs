//! dtask's example tasks that try to leave their sandbox, for the tests of
//! what a task can and cannot reach.

wit_bindgen::generate!({
    world: "dtask:examples/probe@0.1.0",
    path: ["../wit", "wit"],
    generate_all,
});

struct Probe;

impl Guest for Probe {
    fn probe(what: String) -> String {
        let outcome = match what.as_str() {
            "file" => std::fs::read_to_string("/etc/passwd").map(|t| format!("read {} bytes", t.len())),
            "dir" => std::fs::read_dir("/").map(|d| format!("listed {} entries", d.count())),
            "env" => return format!("{} environment variables", std::env::vars().count()),
            "clock" => return clock_steps(),
            net if net.starts_with("net:") => {
                std::net::TcpStream::connect(&net[4..]).map(|_| "connected".to_string())
            }
            other => return format!("nothing to probe called {other}"),
        };
        match outcome {
            Ok(done) => format!("escaped: {done}"),
            Err(e) => format!("denied: {e}"),
        }
    }

    fn read_file(path: String) -> Result<String, String> {
        std::fs::read_to_string(&path).map_err(|e| format!("cannot read {path}: {e}"))
    }
}

/// The smallest step seen between readings of the monotonic clock (over
/// its first few steps, for at most a second), and how far into its second
/// the wall clock reads: `monotonic step N ns, wall N ns`.
fn clock_steps() -> String {
    use std::time::{Duration, Instant, SystemTime};
    let start = Instant::now();
    let mut last = start;
    let mut step = u128::MAX;
    let mut seen = 0;
    while seen < 5 && start.elapsed() < Duration::from_secs(1) {
        let now = Instant::now();
        if now != last {
            step = step.min((now - last).as_nanos());
            last = now;
            seen += 1;
        }
    }
    let wall = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("monotonic step {step} ns, wall {wall} ns")
}

export!(Probe);
