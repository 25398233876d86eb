//! Options shared by `submit` and `map`: keys, priority, limits, retries
//! and placement.

use super::{Failure, parse_duration};
use dtask_runtime::client::SubmitOptions;
use dtask_runtime::protocol::Placement;
use std::time::Duration;

/// The limits of a task's runs (`submit`, `map` and `retry` take them).
#[derive(clap::Args, Clone, Debug, Default)]
pub struct LimitFlags {
    /// Wall-clock limit of one run, e.g. `30s` (more than 0; under a
    /// millisecond counts as one); past it the task errs
    /// [default: none, or `task.timeout` in dtask.toml].
    #[arg(long, value_parser = parse_time_limit, value_name = "DUR")]
    pub timeout: Option<Duration>,
    /// Memory limit of one run in MiB, at most what some worker allows (a
    /// larger one is refused); past it the task errs with `memory`
    /// [default: the worker's, or `task.memory-limit-mib` in dtask.toml].
    #[arg(long, value_name = "MIB")]
    pub memory_limit_mib: Option<u64>,
    /// Run again up to N times when the task errs [default: 0, or
    /// `task.retries` in dtask.toml].
    #[arg(long, value_name = "N")]
    pub retries: Option<u32>,
}

/// A run's (or an actor call's) time limit: a duration above 0 (a limit
/// of 0 would fail every run).
pub fn parse_time_limit(s: &str) -> Result<Duration, String> {
    let limit = parse_duration(s)?;
    if limit.is_zero() {
        return Err(format!(
            "a time limit of {s} would fail every run: give one above 0, or leave the flag \
             out for none"
        ));
    }
    Ok(limit)
}

impl LimitFlags {
    /// The limits asked for, for a retry: those not given stay as they
    /// were submitted.
    pub fn task_limits(&self) -> dtask_runtime::protocol::TaskLimits {
        dtask_runtime::protocol::TaskLimits {
            timeout_ms: self.timeout.map(dtask_runtime::client::limit_ms),
            memory_limit: self.memory_limit_mib.map(|m| m.saturating_mul(1 << 20)),
            retries: self.retries,
        }
    }
}

/// How tasks are submitted.
#[derive(clap::Args, Clone)]
pub struct TaskOptions {
    /// Same call, same key, computed once (default). `--pure=false` gives a
    /// fresh random key.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub pure: bool,
    /// Higher runs earlier among ready tasks.
    #[arg(
        long,
        default_value_t = 0,
        allow_negative_numbers = true,
        value_name = "N"
    )]
    pub priority: i32,
    #[command(flatten)]
    pub limits: LimitFlags,
    /// Run only on these workers (name, address or id; comma-separated).
    #[arg(long, value_delimiter = ',', value_name = "WORKER")]
    pub workers: Vec<String>,
    /// With --workers: prefer them, but run elsewhere if none can.
    #[arg(long)]
    pub allow_other_workers: bool,
    /// Resources one run holds, e.g. `GPU=1` (repeatable); only workers
    /// started with enough `--resources` run it.
    #[arg(long = "resources", value_parser = parse_resource, value_name = "NAME=AMOUNT")]
    pub resources: Vec<(String, f64)>,
    /// Grant an environment variable, `NAME=VALUE` (repeatable); tasks see
    /// no environment otherwise.
    #[arg(long = "env", value_parser = parse_env, value_name = "NAME=VALUE")]
    pub env: Vec<(String, String)>,
    /// Grant read access to a host directory, seen at the same path
    /// (repeatable); the worker must allow it (`dtask worker --allow-dir`).
    #[arg(long = "dir", value_name = "DIR")]
    pub dirs: Vec<std::path::PathBuf>,
    /// Compute even though nothing holds the result, then drop it.
    #[arg(long)]
    pub fire_and_forget: bool,
}

impl TaskOptions {
    /// The client-side options, with the given explicit key.
    pub fn submit_options(&self, key: Option<String>) -> Result<SubmitOptions, Failure> {
        if self.allow_other_workers && self.workers.is_empty() {
            return Err(Failure::usage("--allow-other-workers needs --workers"));
        }
        let defaults = dtask_runtime::config::file_config()
            .map_err(Failure::usage)?
            .map(|(_, c)| c.task)
            .unwrap_or_default();
        let timeout = match (self.limits.timeout, &defaults.timeout) {
            (Some(t), _) => Some(t),
            (None, Some(t)) => Some(
                parse_time_limit(t)
                    .map_err(|e| Failure::usage(format!("task.timeout in dtask.toml: {e}")))?,
            ),
            (None, None) => None,
        };
        Ok(SubmitOptions {
            key,
            pure: self.pure,
            priority: self.priority,
            timeout,
            grants: dtask_runtime::protocol::Grants {
                env: self.env.clone(),
                dirs: self
                    .dirs
                    .iter()
                    .map(|d| {
                        std::path::absolute(d)
                            .map(|p| p.to_string_lossy().into_owned())
                            .map_err(|e| Failure::usage(format!("--dir {}: {e}", d.display())))
                    })
                    .collect::<Result<_, _>>()?,
            },
            memory_limit: self
                .limits
                .memory_limit_mib
                .or(defaults.memory_limit_mib)
                .map(|m| m.saturating_mul(1 << 20)),
            placement: Placement {
                workers: self.workers.clone(),
                allow_other_workers: self.allow_other_workers,
                resources: self.resources.clone(),
            },
            retries: self.limits.retries.or(defaults.retries).unwrap_or(0),
        })
    }
}

/// Says on stderr, once per reason not yet in `said`, why the scheduler
/// found no connected worker that could run submitted tasks (`--workers`
/// names none of them, none offers the `--resources`, or none allows the
/// memory limit): such tasks wait, `no-worker`, until one joins.
pub fn note_unplaceable(notes: &[(String, String)], said: &mut std::collections::HashSet<String>) {
    for (key, why) in notes {
        if said.insert(why.clone()) {
            eprintln!(
                "dtask: note: {why}; the task waits until one joins (`dtask status {key}` says \
                 no-worker; `dtask workers` lists the workers)"
            );
        }
    }
}

/// Parses `NAME=VALUE`.
pub fn parse_env(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((name, value)) if !name.is_empty() => Ok((name.to_string(), value.to_string())),
        _ => Err(format!("{s:?} is not NAME=VALUE (e.g. MODE=fast)")),
    }
}

/// Parses `NAME=AMOUNT`.
pub fn parse_resource(s: &str) -> Result<(String, f64), String> {
    let (name, amount) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not NAME=AMOUNT (e.g. GPU=1)"))?;
    let amount: f64 = amount
        .parse()
        .map_err(|_| format!("{amount:?} in {s:?} is not a number"))?;
    if name.is_empty() || !(amount.is_finite() && amount >= 0.0) {
        return Err(format!("{s:?} needs a name and a non-negative amount"));
    }
    Ok((name.to_string(), amount))
}
