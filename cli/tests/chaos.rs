//! End-to-end: workers and schedulers killed outright, as an unlucky
//! operator sees it. Only a task that was running when its worker died is
//! suspected of killing it; work survives scheduler restarts.

mod common;

use common::*;
use std::time::Duration;

/// The data address of the one connected worker that is not `old`.
fn newcomer(p: &Pieces, old: Option<&str>) -> String {
    let mut found = None;
    wait_until(Duration::from_secs(30), "a new worker to join", || {
        found = p
            .workers_json()
            .into_iter()
            .map(|w| w["address"].as_str().unwrap_or_default().to_string())
            .find(|a| Some(a.as_str()) != old);
        found.is_some()
    });
    found.unwrap()
}

/// The `executing` count of the worker at `addr` (0 if it is not there).
fn executing(p: &Pieces, addr: &str) -> u64 {
    p.workers_json()
        .iter()
        .find(|w| w["address"] == addr)
        .and_then(|w| w["executing"].as_u64())
        .unwrap_or(0)
}

#[test]
fn tasks_queued_behind_a_running_one_survive_three_worker_deaths() {
    let mut p = Pieces::start(1);
    let tasks = tasks_wasm();
    let mut current = 0;
    let mut addr = newcomer(&p, None);
    let spin = p.ok(&["submit", "--pure=false", tasks, "spin", "600000"]);
    wait_until(Duration::from_secs(30), "spin to start", || {
        executing(&p, &addr) == 1
    });
    // Five tasks wait in the worker's queue behind it (one slot), and one
    // more task depends on the first of them.
    let queued = run_with_stdin(p.command().args(["map", tasks, "inc"]), "1\n2\n3\n4\n5\n");
    assert!(queued.status.success(), "{}", stderr(&queued));
    let queued: Vec<String> = stdout(&queued).lines().map(str::to_string).collect();
    let dependent = p.ok(&["submit", tasks, "add", &format!("@{}", queued[0]), "10"]);

    for round in 1..=3 {
        p.add_worker();
        let next = newcomer(&p, Some(&addr));
        // Compile the module there first, so the kill lands while the
        // spin (not a module load) is what runs.
        let warm = p.ok(&[
            "submit",
            "--pure=false",
            "--workers",
            &next,
            tasks,
            "inc",
            "0",
        ]);
        assert_eq!(p.ok(&["gather", &warm]), "1");
        p.kill_worker(current);
        current = p.workers.len() - 1;
        addr = next;
        if round < 3 {
            wait_until(Duration::from_secs(30), "spin to start again", || {
                executing(&p, &addr) == 1
            });
        }
    }
    p.add_worker();
    p.wait_for_workers(2);

    let out = p.run(&["gather", &spin]);
    assert_eq!(out.status.code(), Some(1), "the spin task erred");
    assert!(
        stderr(&out).contains("3 workers that died"),
        "{}",
        stderr(&out)
    );
    let input = queued.join("\n") + "\n";
    let out = run_with_stdin(p.command().arg("gather"), &input);
    assert!(out.status.success(), "queued tasks erred: {}", stderr(&out));
    assert_eq!(stdout(&out), "2\n3\n4\n5\n6\n");
    assert_eq!(p.ok(&["gather", &dependent]), "12");
}

#[test]
fn a_worker_gives_back_the_memory_of_tasks_that_ended() {
    // One slot, 256 MiB per task: sixteen tasks that each fill 200 MiB may
    // not leave the worker holding more than about one of them.
    let p = Pieces::start(1);
    let worker = p.workers[0].id();
    let input = "200\n".repeat(16);
    let keys = run_with_stdin(
        p.command()
            .args(["map", "--pure=false", tasks_wasm(), "hog"]),
        &input,
    );
    assert!(keys.status.success(), "{}", stderr(&keys));
    let out = run_with_stdin(p.command().arg("gather"), &stdout(&keys));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), format!("{}\n", 200 << 20).repeat(16));
    let (peak, idle) = (mib(worker, "VmHWM"), mib(worker, "VmRSS"));
    eprintln!("worker peak RSS {peak} MiB, idle RSS {idle} MiB");
    assert!(peak <= 600, "peak RSS {peak} MiB");
    assert!(idle <= 100, "idle RSS {idle} MiB");
}
