//! `/metrics`: the scheduler's and its workers' figures in the
//! Prometheus/OpenMetrics text format. The scheduler aggregates what its
//! workers report in their heartbeats, so a cluster is one scrape target.

use super::dashboard::MetricsView;
use super::state::Phase;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

type Labels = Vec<(&'static str, String)>;
type FloatCounter = Counter<f64, AtomicU64>;
type FloatGauge = Gauge<f64, AtomicU64>;
/// A per-worker gauge: (name, help, value).
type WorkerGauge = (
    &'static str,
    &'static str,
    fn(&crate::protocol::WorkerInfo) -> u64,
);

struct Builder(Registry);

impl Builder {
    fn gauge(&mut self, name: &str, help: &str, value: u64) {
        let g: Gauge = Gauge::default();
        g.set(value as i64);
        self.0.register(name, help, g);
    }

    fn counter(&mut self, name: &str, help: &str, value: u64) {
        let c: Counter = Counter::default();
        c.inc_by(value);
        self.0.register(name, help, c);
    }

    fn gauges(&mut self, name: &str, help: &str) -> Family<Labels, Gauge> {
        let f = Family::<Labels, Gauge>::default();
        self.0.register(name, help, f.clone());
        f
    }

    fn counters(&mut self, name: &str, help: &str) -> Family<Labels, Counter> {
        let f = Family::<Labels, Counter>::default();
        self.0.register(name, help, f.clone());
        f
    }
}

/// The labels naming a worker.
fn worker_labels(w: &crate::protocol::WorkerInfo) -> Labels {
    vec![
        ("worker", escaped(&w.name)),
        ("address", escaped(&w.address)),
    ]
}

/// A label value as the text format writes it: `\`, `"` and a newline
/// escaped (the encoder writes values as they are). Names come from
/// clients and tasks: unescaped, one could add lines of its own to the
/// scrape or make all of it unreadable.
fn escaped(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// The text exposition of `m`.
pub(super) fn encode_view(m: &MetricsView) -> String {
    let mut b = Builder(Registry::default());
    b.gauge(
        "dtask_scheduler_workers",
        "Connected workers",
        m.workers.len() as u64,
    );
    b.gauge(
        "dtask_scheduler_clients",
        "Connected clients",
        m.clients as u64,
    );
    b.gauge(
        "dtask_scheduler_memory_bytes",
        "The scheduler's resident memory",
        m.rss_bytes,
    );
    let tasks = b.gauges("dtask_scheduler_tasks", "Tasks known, by state");
    for p in Phase::ALL {
        tasks
            .get_or_create(&vec![("state", p.name().to_string())])
            .set(m.totals.tasks.get(p) as i64);
    }
    b.counter(
        "dtask_scheduler_tasks_forgotten",
        "Tasks released by every holder and forgotten",
        m.totals.forgotten,
    );
    b.counter(
        "dtask_scheduler_tasks_dispatched",
        "Task runs sent to workers",
        m.stats.dispatched,
    );
    b.counter(
        "dtask_scheduler_tasks_stolen",
        "Tasks an idle worker took from a busy one's queue",
        m.totals.stolen,
    );
    b.counter(
        "dtask_scheduler_tasks_rerun",
        "Runs again after a worker died or a result was lost with one",
        m.stats.reruns,
    );
    let by_function = b.gauges(
        "dtask_scheduler_function_tasks",
        "Tasks known, by function and state (the busiest functions)",
    );
    let finished = b.counters("dtask_tasks_finished", "Tasks that finished, by function");
    let failed = b.counters("dtask_tasks_failed", "Tasks that failed, by function");
    let compute = Family::<Labels, FloatCounter>::default();
    b.0.register(
        "dtask_tasks_compute_seconds",
        "Seconds tasks ran on workers (instantiate and call), by function",
        compute.clone(),
    );
    for (name, f) in &m.functions {
        let function = vec![("function", escaped(name))];
        for p in Phase::ALL {
            let mut labels = function.clone();
            labels.push(("state", p.name().to_string()));
            by_function
                .get_or_create(&labels)
                .set(f.tasks.get(p) as i64);
        }
        finished.get_or_create(&function).inc_by(f.finished);
        failed.get_or_create(&function).inc_by(f.failed);
        compute.get_or_create(&function).inc_by(f.compute_seconds);
    }
    let per_worker: [WorkerGauge; 11] = [
        ("dtask_worker_slots", "Execution slots", |w| {
            u64::from(w.nthreads)
        }),
        ("dtask_worker_slots_busy", "Slots running a task", |w| {
            w.executing as u64
        }),
        (
            "dtask_worker_tasks_processing",
            "Tasks assigned and not yet reported, queued ones included",
            |w| w.processing as u64,
        ),
        ("dtask_worker_results", "Results held", |w| w.holding as u64),
        (
            "dtask_worker_result_bytes",
            "Bytes of results held, in memory and spilled",
            |w| w.nbytes,
        ),
        (
            "dtask_worker_spilled_bytes",
            "Bytes of results spilled to disk",
            |w| w.spilled_bytes,
        ),
        ("dtask_worker_memory_bytes", "Resident memory", |w| {
            w.rss_bytes
        }),
        (
            "dtask_worker_restarts",
            "Times a worker was started in its place",
            |w| u64::from(w.restarts),
        ),
        (
            "dtask_worker_instances_pooled",
            "Pooled instances in use (tasks running or waiting, actors)",
            |w| u64::from(w.instances_pooled),
        ),
        (
            "dtask_worker_instances_on_demand",
            "Instances set up on demand in use, past the pool",
            |w| u64::from(w.instances_on_demand),
        ),
        (
            "dtask_worker_instances_full",
            "1 while every instance (pooled and on demand) is held and tasks wait for one (the worker takes no new tasks)",
            |w| u64::from(w.instances_full),
        ),
    ];
    for (name, help, value) in per_worker {
        let family = b.gauges(name, help);
        for w in &m.workers {
            family.get_or_create(&worker_labels(w)).set(value(w) as i64);
        }
    }
    let transfers = b.counters(
        "dtask_worker_transfers",
        "Inputs a worker fetched from other workers",
    );
    let transfer_bytes = b.counters(
        "dtask_worker_transfer_bytes",
        "Bytes of inputs a worker fetched from other workers",
    );
    let worker_compute = Family::<Labels, FloatCounter>::default();
    b.0.register(
        "dtask_worker_compute_seconds",
        "Seconds a worker's task runs took (instantiate and call)",
        worker_compute.clone(),
    );
    let age = Family::<Labels, FloatGauge>::default();
    b.0.register(
        "dtask_worker_heartbeat_age_seconds",
        "Seconds since the worker's last heartbeat",
        age.clone(),
    );
    for w in &m.workers {
        let labels = worker_labels(w);
        transfers.get_or_create(&labels).inc_by(w.fetched);
        transfer_bytes
            .get_or_create(&labels)
            .inc_by(w.fetched_bytes);
        worker_compute
            .get_or_create(&labels)
            .inc_by(w.compute_seconds);
        age.get_or_create(&labels)
            .set(w.heartbeat_age_ms as f64 / 1e3);
    }
    let p = &m.primitives;
    let queues = b.gauges("dtask_queue_length", "Items waiting in a queue");
    for (name, len, _) in &p.queues {
        queues
            .get_or_create(&vec![("queue", escaped(name))])
            .set(*len as i64);
    }
    let waiters = b.gauges(
        "dtask_lock_waiters",
        "Requests waiting for a lock or semaphore",
    );
    for (name, _, n) in &p.locks {
        waiters
            .get_or_create(&vec![("lock", escaped(name))])
            .set(*n as i64);
    }
    for (name, _, _, n) in &p.semaphores {
        waiters
            .get_or_create(&vec![("semaphore", escaped(name))])
            .set(*n as i64);
    }
    let topics = b.gauges("dtask_topic_subscribers", "Subscribers of a topic");
    for (name, n) in &p.topics {
        topics
            .get_or_create(&vec![("topic", escaped(name))])
            .set(*n as i64);
    }
    b.gauge("dtask_actors", "Actors known", p.totals[6] as u64);
    if let Some((bytes, records, syncs, seconds)) = m.journal {
        b.counter(
            "dtask_journal_bytes",
            "Bytes of journal records written since the scheduler started",
            bytes,
        );
        b.counter(
            "dtask_journal_records",
            "Journal records written since the scheduler started",
            records,
        );
        b.counter("dtask_journal_syncs", "Journal syncs to disk", syncs);
        let s = FloatCounter::default();
        s.inc_by(seconds);
        b.0.register(
            "dtask_journal_sync_seconds",
            "Seconds spent syncing the journal to disk",
            s,
        );
    }
    let mut out = String::new();
    encode(&mut out, &b.0).expect("writing to a String cannot fail");
    out
}
