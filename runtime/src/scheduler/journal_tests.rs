//! The journal's files against the state machine it records: compaction
//! streams, recovery gives back exactly the scheduler's state.

use super::state::{Input, Scheduler};
use dtask_core::protocol::TaskSpec;
use dtask_core::scheduler::testing::*;

/// Waits until a compaction has folded every record handed to `journal`
/// into the snapshot: the only log left is the empty one after it.
fn compacted_all(journal: &super::journal::Journal, dir: &std::path::Path) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        // Each write lets the writer start the next compaction.
        journal.flush();
        let logs: Vec<(String, u64)> = std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("log-"))
            .map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                (name, e.metadata().unwrap().len())
            })
            .collect();
        let covered = super::journal::read_snapshot_gen(dir);
        if let ([(name, len)], Some(g)) = (logs.as_slice(), covered)
            && *name == format!("log-{:012}.bin", g + 1)
            && *len == 20
        {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no compaction: {logs:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

#[test]
fn streamed_compactions_recover_exactly_the_state_the_scheduler_has() {
    use super::journal::{Journal, JournalOptions};
    let dir = tempfile::tempdir().unwrap();
    let options = JournalOptions {
        compact_bytes: 1,
        compact_ratio: 0,
        compact_quiet: std::time::Duration::ZERO,
        ..JournalOptions::default()
    };
    let (journal, found) = Journal::open(dir.path(), options.clone()).unwrap();
    assert!(found.is_none());
    let mut s = Scheduler::new();
    s.enable_journal();
    let go = |s: &mut Scheduler, e: Input| {
        s.handle(e);
        journal.append(s.journal_records());
    };
    go(&mut s, Input::ModuleStored { hash: M.into() });
    go(
        &mut s,
        Input::ClientConnected {
            client: 1,
            name: Some("cli".into()),
            session: 0,
        },
    );
    go(&mut s, joined(10, 1));
    let many: Vec<TaskSpec> = (0..300)
        .map(|i| spec(&format!("t{i:03}"), vec![val(i as u8)]))
        .collect();
    go(
        &mut s,
        Input::Submit {
            counted: true,
            session: 0,
            client: 1,
            id: 1,
            tasks: [
                spec("a", vec![val(1)]),
                spec("b", vec![fut("a")]),
                spec("c", vec![val(3)]),
                spec("gone", vec![val(4)]),
                spec("x", vec![fut("a")]),
            ]
            .into_iter()
            .chain(many)
            .collect(),
        },
    );
    go(&mut s, started(10, "a"));
    go(
        &mut s,
        Input::Finished {
            worker: 10,
            results: vec![("a".into(), small(2)), ("gone".into(), small(5))],
        },
    );
    // Everything so far is in a snapshot; what follows changes tasks the
    // snapshot holds (a status, a release, an error), adds new ones, and
    // touches primitives, in logs that the next compaction merges in.
    compacted_all(&journal, dir.path());
    let failed = erred(&s, 10, "c", error("c"));
    go(&mut s, failed);
    go(
        &mut s,
        Input::Release {
            client: 1,
            keys: vec!["gone".into(), "t007".into()],
        },
    );
    go(
        &mut s,
        Input::Finished {
            worker: 10,
            results: vec![("x".into(), small(7)), ("t100".into(), small(1))],
        },
    );
    go(
        &mut s,
        Input::Submit {
            counted: true,
            session: 0,
            client: 1,
            id: 2,
            tasks: vec![spec("d", vec![fut("x")]), spec("0-first", vec![val(0)])],
        },
    );
    // A task new in this stretch whose status then changes, twice.
    go(&mut s, started(10, "0-first"));
    go(
        &mut s,
        Input::Finished {
            worker: 10,
            results: vec![("0-first".into(), small(4))],
        },
    );
    go(
        &mut s,
        Input::Primitive {
            client: 1,
            id: 3,
            session: 0,
            task: None,
            op: crate::protocol::Op::VarSet {
                name: "v".into(),
                item: val(9),
            },
        },
    );
    compacted_all(&journal, dir.path());
    // And a change left in a log, after the last compaction.
    go(
        &mut s,
        Input::Finished {
            worker: 10,
            results: vec![("t200".into(), small(3))],
        },
    );
    journal.close();
    let (journal, found) = Journal::open(dir.path(), options).unwrap();
    let recovered = found
        .expect("recovered")
        .into_snapshot()
        .unwrap()
        .canonical();
    assert_eq!(recovered, s.snapshot().canonical());
    journal.close();
}

/// Bytes of the journal's snapshot and logs in `dir`.
fn journal_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_type().unwrap().is_file())
        .map(|e| e.metadata().unwrap().len())
        .sum()
}

/// A journal whose tasks were all released shrinks at the next quiet
/// moment, though its log is far below the size that makes a compaction
/// due; one left that big by a scheduler that stopped first is folded by
/// the next to open it.
#[test]
fn a_journal_whose_tasks_were_all_released_shrinks_once_quiet() {
    use super::journal::{Journal, JournalOptions};
    use std::sync::atomic::Ordering;
    use std::time::{Duration, Instant};
    let never = JournalOptions {
        compact_bytes: 1 << 40,
        compact_quiet: Duration::from_secs(3600),
        ..JournalOptions::default()
    };
    let soon = JournalOptions {
        compact_quiet: Duration::from_millis(50),
        ..never.clone()
    };
    let compacted = |j: &Journal| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while j.health().compactions.load(Ordering::Acquire) == 0 {
            assert!(Instant::now() < deadline, "no compaction");
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    for reopened in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let first = if reopened { &never } else { &soon };
        let (journal, _) = Journal::open(dir.path(), first.clone()).unwrap();
        let mut s = setup(&[(10, 1)]);
        s.enable_journal();
        let tasks = (0..20_000)
            .map(|i| spec(&format!("t{i:05}"), vec![val(i as u8)]))
            .collect();
        submit(&mut s, tasks);
        journal.append(s.journal_records());
        s.handle(Input::ReleaseAll { client: 1 });
        s.finish_releases();
        assert_eq!(s.task_count(), 0);
        journal.append(s.journal_records());
        journal.health().live_tasks.store(0, Ordering::Relaxed);
        journal.flush();
        let grown = journal.health().bytes.load(Ordering::Acquire);
        assert!(grown > 512 << 10, "{grown}");
        let journal = if reopened {
            journal.close();
            let (journal, found) = Journal::open(dir.path(), soon.clone()).unwrap();
            assert!(found.is_some());
            // What the scheduler says once it has restored the state.
            journal.health().live_tasks.store(0, Ordering::Relaxed);
            journal
        } else {
            journal
        };
        compacted(&journal);
        let shrunk = journal_bytes(dir.path());
        assert!(
            shrunk < 64 << 10,
            "reopened {reopened}: {grown} -> {shrunk}"
        );
        journal.close();
    }
}
