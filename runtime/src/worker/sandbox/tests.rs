//! The sandbox's limits and failures, against real guests.

use super::capture::STDERR_DROPPED;
use super::*;
use crate::module::compile;
use crate::module::tests::{CAT_WASM, RUN_COMPONENT};

fn ready(sandbox: &Sandbox, m: Result<CompiledModule, String>) -> Ready {
    sandbox.prepare(m.unwrap()).unwrap()
}

fn cat(sandbox: &Sandbox) -> Ready {
    cat_on(sandbox, sandbox.engine())
}

/// `cat.wasm` compiled by `engine`, one of the sandbox's.
fn cat_on(sandbox: &Sandbox, engine: &Engine) -> Ready {
    let bytes = std::fs::read(CAT_WASM).unwrap();
    ready(sandbox, compile(engine, &bytes, "cat.wasm", None))
}

fn core(sandbox: &Sandbox, wat: &str) -> Ready {
    core_on(sandbox, sandbox.engine(), wat)
}

/// A core module compiled by `engine`, one of the sandbox's.
fn core_on(sandbox: &Sandbox, engine: &Engine, wat: &str) -> Ready {
    let bytes = ::wat::parse_str(wat).unwrap();
    let m = compile(engine, &bytes, "test.wasm", None).unwrap();
    assert!(Engine::same(m.code.engine(), engine));
    sandbox.prepare(m).unwrap()
}

/// Both of the sandbox's compilers: Cranelift's optimised code and
/// Winch's quickly compiled code (a module's first tasks), which must keep
/// the same limits and give the same results.
fn engines(sandbox: &Sandbox) -> Vec<Engine> {
    let fast = sandbox.fast_engine().expect("Winch on this platform");
    vec![sandbox.engine().clone(), fast.clone()]
}

fn argv(words: &[&str]) -> Value {
    Value::Array(words.iter().map(|w| Value::from(*w)).collect())
}

/// Runs `command`'s `_start` with no stdin and `words` as its argv.
async fn start(
    sandbox: &Sandbox,
    command: &Ready,
    words: &[&str],
    timeout: Option<Duration>,
) -> Result<Value, TaskError> {
    sandbox
        .run(
            command,
            "k",
            "_start",
            vec![Value::Nil, argv(words)],
            timeout,
        )
        .await
}

#[tokio::test]
async fn unbounded_recursion_is_a_stack_error_and_the_sandbox_goes_on() {
    let sandbox = Sandbox::new("t", Limits::default(), 1).unwrap();
    let deep = core(
        &sandbox,
        r#"(module
            (func $f (param i32) (result i32) (call $f (i32.add (local.get 0) (i32.const 1))))
            (func (export "_start") (drop (call $f (i32.const 0))))
            (memory (export "memory") 1))"#,
    );
    let e = start(&sandbox, &deep, &["deep"], None).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Stack, "{e:?}");
    let cat = cat(&sandbox);
    assert!(start(&sandbox, &cat, &["cat"], None).await.is_ok());
}

/// A WASI command growing its memory until it cannot.
const GROW_MEMORY: &str = r#"(module
    (func (export "_start")
      (loop $grow (br_if $grow (i32.ne (memory.grow (i32.const 16)) (i32.const -1)))))
    (memory (export "memory") 1))"#;

#[tokio::test]
async fn growing_memory_past_the_limit_is_a_memory_error() {
    let sandbox = Sandbox::new(
        "t",
        Limits {
            memory: 2 << 20,
            ..Limits::default()
        },
        1,
    )
    .unwrap();
    for engine in engines(&sandbox) {
        let bomb = core_on(&sandbox, &engine, GROW_MEMORY);
        let e = start(&sandbox, &bomb, &["bomb"], None).await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::Memory, "{e:?}");
    }
}

#[tokio::test]
async fn a_core_command_reads_stdin_and_its_stdout_is_the_result() {
    let sandbox = Sandbox::new("t", Limits::default(), 1).unwrap();
    for engine in engines(&sandbox) {
        let cat = cat_on(&sandbox, &engine);
        let stdin = Value::Binary(b"one\ntwo\n".to_vec());
        let out = sandbox
            .run(&cat, "k", "_start", vec![stdin, argv(&["cat"])], None)
            .await
            .unwrap();
        assert_eq!(out, Value::Binary(b"one\ntwo\n".to_vec()));
        // `main` is the same function; nil is empty stdin.
        let out = sandbox
            .run(&cat, "k", "main", vec![Value::Nil, argv(&["cat"])], None)
            .await
            .unwrap();
        assert_eq!(out, Value::Binary(Vec::new()));
    }
}

#[tokio::test]
async fn stdin_from_any_value_is_its_bytes_text_or_json() {
    let sandbox = Sandbox::new("t", Limits::default(), 1).unwrap();
    let cat = cat(&sandbox);
    for (value, text) in [
        (Value::from("Hello, world!"), "Hello, world!"),
        (Value::from(42), "42"),
        (
            Value::Map(vec![(Value::from("ok"), Value::from(1))]),
            r#"{"ok":1}"#,
        ),
    ] {
        let out = sandbox
            .run(&cat, "k", "_start", vec![value, argv(&["cat"])], None)
            .await
            .unwrap();
        assert_eq!(out, Value::Binary(text.as_bytes().to_vec()));
    }
}

#[tokio::test]
async fn a_nonzero_exit_is_an_exit_error_with_stderr() {
    let sandbox = Sandbox::new("t", Limits::default(), 1).unwrap();
    let cat = cat(&sandbox);
    let e = start(&sandbox, &cat, &["cat", "a", "b"], None)
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Exit);
    assert_eq!(e.message, "task k exited with status 2");
    assert!(
        e.stderr.contains("cat.wat: exiting with the number"),
        "{e:?}"
    );
    assert_eq!(e.origin, "k");
}

#[tokio::test]
async fn a_command_component_whose_run_fails_exits_with_status_1() {
    let sandbox = Sandbox::new("t", Limits::default(), 1).unwrap();
    let bytes = ::wat::parse_str(RUN_COMPONENT).unwrap();
    let run = ready(
        &sandbox,
        compile(sandbox.engine(), &bytes, "run.wasm", None),
    );
    let e = start(&sandbox, &run, &["run"], None).await.unwrap_err();
    assert_eq!(
        (e.kind, e.message.as_str()),
        (ErrorKind::Exit, "task k exited with status 1")
    );
}

#[tokio::test]
async fn bad_command_arguments_are_input_errors() {
    let sandbox = Sandbox::new("t", Limits::default(), 1).unwrap();
    let cat = cat(&sandbox);
    let e = sandbox
        .run(
            &cat,
            "k",
            "_start",
            vec![Value::Nil, Value::from("cat")],
            None,
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Input);
    assert!(
        e.message.contains("argv: expected a list of strings"),
        "{e:?}"
    );
    let e = sandbox
        .run(&cat, "k", "_start", vec![Value::Nil], None)
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Input);
    let e = sandbox
        .run(&cat, "k", "inc", vec![Value::Nil, argv(&["cat"])], None)
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Module);
}

#[tokio::test]
async fn a_command_past_its_time_limit_times_out() {
    let sandbox = Sandbox::new("t", Limits::default(), 1).unwrap();
    for engine in engines(&sandbox) {
        let spin = core_on(
            &sandbox,
            &engine,
            r#"(module (func (export "_start") (loop br 0)))"#,
        );
        let e = start(&sandbox, &spin, &["spin"], Some(Duration::from_millis(100)))
            .await
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::Timeout, "{e:?}");
    }
}

#[tokio::test]
async fn a_command_trap_is_a_trap() {
    let sandbox = Sandbox::new("t", Limits::default(), 1).unwrap();
    let bad = core(&sandbox, r#"(module (func (export "_start") unreachable))"#);
    let e = start(&sandbox, &bad, &["bad"], None).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Trap, "{e:?}");
    assert!(e.message.contains("unreachable"), "{e:?}");
}

#[tokio::test]
async fn a_chatty_stderr_never_fails_a_write_and_its_end_is_kept() {
    let sandbox = Sandbox::new("t", Limits::default(), 1).unwrap();
    // Writes 100 times 1 KiB of "x" to stderr, exits 9 if a write
    // fails and 1 otherwise.
    let chatty = core(
        &sandbox,
        r#"(module
            (import "wasi_snapshot_preview1" "fd_write"
              (func $fd_write (param i32 i32 i32 i32) (result i32)))
            (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
            (memory (export "memory") 1)
            (func (export "_start") (local $i i32)
              (memory.fill (i32.const 1024) (i32.const 120) (i32.const 1024))
              (loop $more
                (i32.store (i32.const 0) (i32.const 1024))
                (i32.store (i32.const 4) (i32.const 1024))
                (if (call $fd_write (i32.const 2) (i32.const 0) (i32.const 1) (i32.const 8))
                  (then (call $proc_exit (i32.const 9))))
                (local.set $i (i32.add (local.get $i) (i32.const 1)))
                (br_if $more (i32.lt_u (local.get $i) (i32.const 100))))
              (call $proc_exit (i32.const 1))))"#,
    );
    let e = start(&sandbox, &chatty, &["chatty"], None)
        .await
        .unwrap_err();
    assert_eq!(e.message, "task k exited with status 1");
    assert_eq!(
        e.stderr,
        format!("{STDERR_DROPPED}{}", "x".repeat(STDERR_CAP))
    );
}

/// A command writing 1 MiB of the byte 7 at a time, `mib` times, ignoring
/// write errors.
fn flood(sandbox: &Sandbox, mib: u32) -> Ready {
    core(
        sandbox,
        &format!(
            r#"(module
            (import "wasi_snapshot_preview1" "fd_write"
              (func $fd_write (param i32 i32 i32 i32) (result i32)))
            (memory (export "memory") 17)
            (func (export "_start") (local $i i32)
              (memory.fill (i32.const 65536) (i32.const 7) (i32.const 1048576))
              (i32.store (i32.const 0) (i32.const 65536))
              (i32.store (i32.const 4) (i32.const 1048576))
              (loop $more
                (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
                (local.set $i (i32.add (local.get $i) (i32.const 1)))
                (br_if $more (i32.lt_u (local.get $i) (i32.const {mib}))))))"#
        ),
    )
}

#[tokio::test]
async fn stdout_past_the_cap_is_a_clear_error() {
    let limits = Limits {
        memory: 64 << 20,
        ..Limits::default()
    };
    let sandbox = Sandbox::new("t", limits, 1).unwrap();
    let flood = flood(&sandbox, 70);
    let e = start(&sandbox, &flood, &["flood"], None).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Memory);
    assert!(
        e.message
            .contains("wrote more than 64.0 MiB to stdout, its memory limit"),
        "{e:?}"
    );
}

#[tokio::test]
async fn stdout_over_the_results_budget_is_written_to_a_spill_file_as_it_comes() {
    let limits = Limits {
        memory: 16 << 20,
        ..Limits::default()
    };
    let sandbox = Sandbox::new("t", limits, 1).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(crate::worker::store::ResultStore::new(
        4 << 20,
        dir.path().join("spill"),
    ));
    let run = |mib: u32| {
        let limits = RunLimits {
            spill: Some(store.clone()),
            ..RunLimits::default()
        };
        let args = vec![TaskArg::Value(Value::Nil), TaskArg::Value(argv(&["flood"]))];
        let flood = flood(&sandbox, mib);
        let sandbox = &sandbox;
        async move {
            sandbox
                .run_linked(&flood, "k", "_start", args, limits, None)
                .await
        }
    };
    // Within the budget: in memory, encoded as it was written.
    let Ok(Output::Encoded(small)) = run(3).await else {
        panic!("3 MiB of stdout is not held in memory")
    };
    assert_eq!(value::binary_payload(&small), Some(&[7u8; 3 << 20][..]));
    // 20 MiB: past the task's 16 MiB of memory and the store's budget.
    let Ok(Output::Spilled(file)) = run(20).await else {
        panic!("20 MiB of stdout did not go to a spill file")
    };
    let len = file.len();
    assert_eq!(len, (20 << 20) + 5);
    store.adopt("k", file);
    assert_eq!(store.usage().spilled, len);
    let (total, encoded) = store.read("k", 0, len).await.unwrap();
    assert_eq!(total, len);
    assert_eq!(value::binary_payload(&encoded), Some(&[7u8; 20 << 20][..]));
}

#[test]
fn panic_message_is_extracted() {
    let s = "\nthread '<unnamed>' panicked at src/lib.rs:27:13:\ndivision by zero: 1 / 0\nnote: run with `RUST_BACKTRACE=1`\n";
    assert_eq!(panic_message(s).as_deref(), Some("division by zero: 1 / 0"));
    assert_eq!(panic_message("just output\n"), None);
}

#[test]
fn a_maps_line_names_an_anonymous_range_and_nothing_else() {
    use super::huge_pages::anonymous;
    assert_eq!(
        anonymous("7f0000000000-7f0100000000 ---p 00000000 00:00 0 "),
        Some((0x7f00_0000_0000, 0x7f01_0000_0000))
    );
    assert_eq!(
        anonymous("55d0c000-55d0d000 r--p 00000000 fd:01 1234   /usr/bin/dtask"),
        None
    );
    assert_eq!(
        anonymous("7ffd1000-7ffd2000 rw-p 00000000 00:00 0   [stack]"),
        None
    );
    assert_eq!(anonymous("garbage"), None);
}

/// The pool's guest memories are advised huge pages, where the kernel has
/// them: without, 100 MB through a guest costs twice as long.
#[test]
fn the_guest_memory_pool_is_advised_huge_pages() {
    if !std::path::Path::new("/sys/kernel/mm/transparent_hugepage/enabled").exists() {
        eprintln!("SKIPPED: this kernel has no transparent huge pages");
        return;
    }
    let before = huge_pages::reservations();
    let limits = Limits::default();
    let memory = limits.memory;
    let _sandbox = Sandbox::new("t", limits, 1).unwrap();
    let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
    let mut advised = Vec::new();
    let mut range = None;
    for line in smaps.lines() {
        if let Some(r) = huge_pages::anonymous(line) {
            range = Some(r);
        } else if let Some(flags) = line.strip_prefix("VmFlags:")
            && let Some((start, end)) = range.take()
            && end - start >= memory * 256
            && !before.contains(&(start, end))
        {
            advised.push(flags.split_whitespace().any(|f| f == "hg"));
        }
    }
    assert!(!advised.is_empty(), "no new pool reservation in smaps");
    assert!(
        advised.contains(&true),
        "the pool is not advised MADV_HUGEPAGE"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_epoch_sleeps_while_no_task_runs_and_wakes_for_the_next() {
    let sandbox = Sandbox::new("t", Limits::default(), 1).unwrap();
    let cat = cat(&sandbox);
    assert!(start(&sandbox, &cat, &["cat"], None).await.is_ok());
    let deadline = Instant::now() + Duration::from_secs(30);
    while !sandbox.ticker.asleep() {
        assert!(Instant::now() < deadline, "the epoch ticker never slept");
        tokio::time::sleep(TICK).await;
    }
    // Only an epoch tick stops this loop at its time limit: the ticker
    // must wake for it.
    let spin = core(&sandbox, r#"(module (func (export "_start") (loop br 0)))"#);
    let limit = Some(Duration::from_millis(100));
    let engine = sandbox.engine().clone();
    let mut task = tokio::spawn(async move { start(&sandbox, &spin, &["spin"], limit).await });
    match tokio::time::timeout(Duration::from_secs(30), &mut task).await {
        Ok(done) => {
            let e = done.unwrap().unwrap_err();
            assert_eq!(e.kind, ErrorKind::Timeout, "{e:?}");
        }
        Err(_) => {
            // Stopped by hand, so that the failure ends the test rather
            // than leaving the guest spinning.
            engine.increment_epoch();
            let _ = task.await;
            panic!("the epoch never ticked for the new task");
        }
    }
}

#[tokio::test]
async fn a_task_finding_every_instance_taken_waits_and_then_fails_saying_why() {
    let limits = Limits {
        max_instances: Some(264),
        ..Limits::default()
    };
    let sandbox = Sandbox::new("t", limits, 1).unwrap();
    let mut taken = Vec::new();
    while let Some(instance) = sandbox.try_instance() {
        assert!(!instance.on_demand());
        taken.push(instance);
    }
    assert_eq!(taken.len(), 264, "the pool of a one-slot worker");
    // One comes free while it waits: it gets that one.
    let freed = taken.pop();
    let (got, ()) = tokio::join!(
        sandbox.instance("k", Some(Duration::from_secs(30))),
        async {
            tokio::task::yield_now().await;
            drop(freed);
        }
    );
    let _got = got.unwrap();
    // None does before its time limit: a timeout, saying why.
    let e = sandbox
        .instance("k", Some(Duration::from_millis(20)))
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Timeout);
    assert!(e.message.contains("264 pooled instances"), "{}", e.message);
}

#[tokio::test]
async fn a_pool_asked_for_holds_that_many_instances_and_never_fewer_than_the_slots() {
    let count = |instances, max_instances, slots| {
        let limits = Limits {
            instances: Some(instances),
            max_instances,
            ..Limits::default()
        };
        let sandbox = Sandbox::new("t", limits, slots).unwrap();
        // Kept until all are counted: a permit dropped is free again.
        let taken: Vec<_> = std::iter::from_fn(|| sandbox.try_instance()).collect();
        let pooled = taken.iter().filter(|i| !i.on_demand()).count();
        (pooled, taken.len())
    };
    assert_eq!(count(3, Some(3), 1), (3, 3));
    assert_eq!(count(2, Some(1), 4), (4, 4));
    assert_eq!(count(3, Some(5), 1), (3, 5));
    assert_eq!(count(3, None, 1), (3, MAX_INSTANCES as usize));
}

/// A component exporting `add: func(a: u32, b: u32) -> u32`.
const ADD_COMPONENT: &str = r#"(component
    (core module $m
      (func (export "add") (param i32 i32) (result i32) local.get 0 local.get 1 i32.add))
    (core instance $i (instantiate $m))
    (func $add (param "a" u32) (param "b" u32) (result u32) (canon lift (core func $i "add")))
    (export "add" (func $add)))"#;

#[tokio::test]
async fn with_the_pool_taken_tasks_run_in_instances_set_up_on_demand_within_the_same_limits() {
    let limits = Limits {
        memory: 2 << 20,
        instances: Some(1),
        max_instances: Some(3),
        ..Limits::default()
    };
    let sandbox = Sandbox::new("t", limits, 1).unwrap();
    let pooled = sandbox.try_instance().unwrap();
    assert!(!pooled.on_demand());
    let add = ::wat::parse_str(ADD_COMPONENT).unwrap();
    for engine in engines(&sandbox) {
        // A component's typed export, a core command, and a core module
        // growing its memory past the limit, each in an instance set up on
        // demand: the same results and the same limit as in the pool.
        let add = ready(&sandbox, compile(&engine, &add, "add.wasm", None));
        let args = vec![Value::from(2), Value::from(40)];
        let sum = sandbox.run(&add, "k", "add", args, None).await.unwrap();
        assert_eq!(sum, Value::from(42));
        let cat = cat_on(&sandbox, &engine);
        let stdin = Value::Binary(b"past the pool".to_vec());
        let out = sandbox
            .run(&cat, "k", "_start", vec![stdin, argv(&["cat"])], None)
            .await
            .unwrap();
        assert_eq!(out, Value::Binary(b"past the pool".to_vec()));
        let bomb = core_on(&sandbox, &engine, GROW_MEMORY);
        let e = start(&sandbox, &bomb, &["bomb"], None).await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::Memory, "{e:?}");
        // Nor may a table grow past the pool's bound (it would take the
        // worker's memory, outside the task's).
        let tables = core_on(
            &sandbox,
            &engine,
            r#"(module
                (table 1 funcref)
                (func (export "_start")
                  (drop (table.grow (ref.null func) (i32.const 100000))))
                (memory (export "memory") 1))"#,
        );
        let e = start(&sandbox, &tables, &["tables"], None)
            .await
            .unwrap_err();
        assert!(e.message.contains("table"), "{e:?}");
    }
    // Two more at most: then a task waits, and says for what.
    let more: Vec<_> = std::iter::from_fn(|| sandbox.try_instance()).collect();
    assert_eq!(more.len(), 2);
    assert!(more.iter().all(Instance::on_demand));
    let e = sandbox
        .instance("k", Some(Duration::from_millis(20)))
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Timeout);
    assert!(
        e.message
            .contains("3 instances (1 pooled, 2 set up on demand)"),
        "{}",
        e.message
    );
    // The pool's own comes free first: it is the one taken.
    drop(pooled);
    assert!(!sandbox.instance("k", None).await.unwrap().on_demand());
}
