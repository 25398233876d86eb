//! `dtask config`: the resolved configuration and where each value came
//! from.

use super::Failure;
use dtask_runtime::config;

/// Print the resolved configuration, one `name = value  # source` line
/// each: scheduler, token, state directory, config file, busy polling,
/// worker and task defaults.
#[derive(clap::Args)]
#[command(
    after_help = "Example:\n  DTASK_SCHEDULER=10.0.0.5:8786 dtask config\n\nExit status: 0 printed, 2 dtask.toml cannot be read (the message says where)."
)]
pub struct Args {
    /// One JSON object per line: name, value, source.
    #[arg(long)]
    json: bool,
}

pub fn run(global: &super::Global, a: Args) -> Result<(), Failure> {
    let file = config::file_config().map_err(Failure::usage)?;
    let file_name = file.as_ref().map(|(p, _)| p.display().to_string());
    let mut rows: Vec<(String, String, String)> = Vec::new();
    let from_env = |var: &str| std::env::var(var).ok().filter(|v| !v.is_empty());

    let state_source = if from_env("DTASK_STATE_DIR").is_some() {
        "DTASK_STATE_DIR"
    } else if from_env("XDG_STATE_HOME").is_some() {
        "XDG_STATE_HOME"
    } else {
        "default"
    };
    rows.push((
        "state-dir".into(),
        config::state_dir().display().to_string(),
        state_source.into(),
    ));
    rows.push((
        "config-file".into(),
        file_name.clone().unwrap_or_else(|| "none".into()),
        format!(
            "searched {}",
            config::config_files()
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    ));
    match config::resolve_address(global.scheduler.as_deref()).map_err(Failure::usage)? {
        Some((address, source)) => rows.push(("scheduler".into(), address, source)),
        None => rows.push((
            "scheduler".into(),
            dtask_runtime::local::read_record().map_or_else(
                || "local default (not running)".into(),
                |r| match r.socket {
                    // Where this machine's commands reach it, then its port.
                    Some(_) => format!("{} (and {})", r.reach(), r.address),
                    None => r.address,
                },
            ),
            "local default cluster".into(),
        )),
    }
    // Where each credential comes from, in the order `config` looks.
    let token_row = |var: &str, configured: Option<std::path::PathBuf>, file: &str| {
        let file_var = format!("{var}_FILE");
        if from_env(var).is_some() {
            ("(set)".to_string(), var.to_string())
        } else if let Some(t) = from_env(&file_var) {
            (t, file_var)
        } else if let Some(t) = configured {
            (
                t.display().to_string(),
                file_name.clone().unwrap_or_default(),
            )
        } else {
            (
                config::state_dir().join(file).display().to_string(),
                "default".into(),
            )
        }
    };
    let configured = |pick: fn(&config::FileConfig) -> Option<std::path::PathBuf>| {
        file.as_ref().and_then(|(_, c)| pick(c))
    };
    let (value, source) = token_row("DTASK_TOKEN", configured(|c| c.token_file.clone()), "token");
    rows.push(("token".into(), value, source));
    let (value, source) = token_row(
        "DTASK_WORKER_TOKEN",
        configured(|c| c.worker_token_file.clone()),
        "worker-token",
    );
    rows.push(("worker-token".into(), value, source));
    let tls = global.tls.files()?;
    for (name, var, flag, path) in [
        ("tls.ca", "DTASK_TLS_CA", &global.tls.tls_ca, &tls.ca),
        (
            "tls.cert",
            "DTASK_TLS_CERT",
            &global.tls.tls_cert,
            &tls.cert,
        ),
        ("tls.key", "DTASK_TLS_KEY", &global.tls.tls_key, &tls.key),
    ] {
        let source = match (flag, path) {
            (Some(_), _) if from_env(var).is_some() => var.to_string(),
            (Some(_), _) => format!("--{}", name.replace('.', "-")),
            (None, Some(_)) => file_name.clone().unwrap_or_default(),
            (None, None) => "default".to_string(),
        };
        let shown = path.as_ref().map_or_else(
            || "none (plaintext)".to_string(),
            |p| p.display().to_string(),
        );
        rows.push((name.into(), shown, source));
    }
    rows.push((
        "client".into(),
        from_env("DTASK_CLIENT").unwrap_or_else(|| "default".into()),
        if from_env("DTASK_CLIENT").is_some() {
            "DTASK_CLIENT"
        } else {
            "default"
        }
        .into(),
    ));
    rows.push((
        "busy-poll".into(),
        match dtask_runtime::busy_poll::configured().map_err(Failure::usage)? {
            Some(spin) => humantime::format_duration(spin).to_string(),
            None => "off".into(),
        },
        if from_env(dtask_runtime::busy_poll::ENV).is_some() {
            dtask_runtime::busy_poll::ENV
        } else {
            "default"
        }
        .into(),
    ));
    let src = |set: bool| {
        if set {
            file_name.clone().unwrap_or_default()
        } else {
            "default".to_string()
        }
    };
    let (w, t) = file
        .as_ref()
        .map(|(_, c)| (c.worker.clone(), c.task.clone()))
        .unwrap_or_default();
    rows.push((
        "worker.nthreads".into(),
        w.nthreads.unwrap_or(1).to_string(),
        src(w.nthreads.is_some()),
    ));
    rows.push((
        "worker.memory-limit-mib".into(),
        w.memory_limit_mib.unwrap_or(256).to_string(),
        src(w.memory_limit_mib.is_some()),
    ));
    rows.push(
        (
            "worker.memory-budget".into(),
            w.memory_budget.clone().unwrap_or_else(|| {
                dtask_runtime::value::human_bytes(
                    dtask_runtime::worker::default_memory_budget(1) as u64
                )
            }),
            src(w.memory_budget.is_some()),
        ),
    );
    rows.push((
        "worker.keep-task-memory".into(),
        w.keep_task_memory.clone().unwrap_or_else(|| {
            dtask_runtime::value::human_bytes(dtask_runtime::worker::sandbox::KEEP_RESIDENT as u64)
        }),
        src(w.keep_task_memory.is_some()),
    ));
    rows.push((
        "worker.instances".into(),
        w.instances.map_or_else(
            || "8 per slot + 256, at most 2000".into(),
            |n| n.to_string(),
        ),
        src(w.instances.is_some()),
    ));
    rows.push((
        "worker.max-instances".into(),
        w.max_instances
            .unwrap_or(dtask_runtime::worker::sandbox::MAX_INSTANCES)
            .to_string(),
        src(w.max_instances.is_some()),
    ));
    rows.push((
        "worker.clock-resolution".into(),
        w.clock_resolution.clone().unwrap_or_else(|| {
            humantime::format_duration(dtask_runtime::worker::sandbox::CLOCK_RESOLUTION).to_string()
        }),
        src(w.clock_resolution.is_some()),
    ));
    rows.push((
        "worker.resources".into(),
        w.resources
            .as_ref()
            .map(|r| {
                r.iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .unwrap_or_default(),
        src(w.resources.is_some()),
    ));
    rows.push((
        "task.timeout".into(),
        t.timeout.clone().unwrap_or_else(|| "none".into()),
        src(t.timeout.is_some()),
    ));
    rows.push((
        "task.retries".into(),
        t.retries.unwrap_or(0).to_string(),
        src(t.retries.is_some()),
    ));
    rows.push((
        "task.memory-limit-mib".into(),
        t.memory_limit_mib
            .map_or_else(|| "the worker's".into(), |m| m.to_string()),
        src(t.memory_limit_mib.is_some()),
    ));

    for (name, value, source) in rows {
        if a.json {
            println!(
                "{}",
                serde_json::json!({"name": name, "value": value, "source": source})
            );
        } else {
            println!("{name} = {value}\t# {source}");
        }
    }
    Ok(())
}
