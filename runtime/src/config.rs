//! Where things are: the state directory, the cluster token, and which
//! scheduler a command talks to.
//!
//! The scheduler is found from, in order: an explicit `--scheduler`,
//! `DTASK_SCHEDULER`, `./dtask.toml`, `$XDG_CONFIG_HOME/dtask/config.toml`
//! (key `scheduler`), and otherwise the local default cluster recorded in
//! the state directory (started on demand, see [`crate::local`]).

use serde::Deserialize;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The state directory: `$DTASK_STATE_DIR`, else `$XDG_STATE_HOME/dtask`,
/// else `~/.local/state/dtask`.
pub fn state_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("DTASK_STATE_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_STATE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("dtask");
    }
    home().join(".local/state/dtask")
}

fn home() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp"))
}

/// Creates the state directory (mode 0700) if needed and returns it.
pub fn ensure_state_dir() -> std::io::Result<PathBuf> {
    let dir = state_dir();
    std::fs::create_dir_all(&dir)?;
    let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700));
    Ok(dir)
}

/// Where compiled modules are cached.
pub fn cache_dir() -> PathBuf {
    state_dir().join("cache")
}

/// The token in `path`, trimmed.
pub fn read_token(path: &Path) -> Result<String, String> {
    let t = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the token file {}: {e}", path.display()))?;
    let t = t.trim().to_string();
    if t.is_empty() {
        return Err(format!("the token file {} is empty", path.display()));
    }
    Ok(t)
}

/// The client token for a scheduler this user starts: `DTASK_TOKEN`, else
/// the state directory's `token` file, created (0600) with a fresh random
/// token if it does not exist.
pub fn server_token() -> Result<String, String> {
    server_secret("DTASK_TOKEN", "token")
}

/// The worker token for a scheduler this user starts:
/// `DTASK_WORKER_TOKEN`, else the state directory's `worker-token` file,
/// created (0600) like the client token's.
pub fn server_worker_token() -> Result<String, String> {
    server_secret("DTASK_WORKER_TOKEN", "worker-token")
}

/// Both credentials of a scheduler this user starts.
pub fn server_credentials() -> Result<crate::secret::Credentials, String> {
    Ok(crate::secret::Credentials {
        client: server_token()?.into(),
        worker: server_worker_token()?.into(),
    })
}

fn server_secret(var: &str, file: &str) -> Result<String, String> {
    if let Ok(t) = std::env::var(var)
        && !t.is_empty()
    {
        return Ok(t);
    }
    let dir = ensure_state_dir().map_err(|e| format!("cannot create the state directory: {e}"))?;
    let path = dir.join(file);
    if let Ok(t) = read_token(&path) {
        return Ok(t);
    }
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| format!("no randomness for a token: {e}"))?;
    let token = hex::encode(bytes);
    let tmp = dir.join(format!(".{file}.{}", std::process::id()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    f.write_all(token.as_bytes()).map_err(|e| e.to_string())?;
    drop(f);
    // If another process created the token meanwhile, keep theirs.
    if std::fs::hard_link(&tmp, &path).is_err() {
        let _ = std::fs::remove_file(&tmp);
        return read_token(&path);
    }
    let _ = std::fs::remove_file(&tmp);
    Ok(token)
}

/// The contents of a `dtask.toml`.
///
/// ```toml
/// scheduler = "10.0.0.5:8786"
/// token-file = "/etc/dtask/token"
/// worker-token-file = "/etc/dtask/worker-token"
///
/// [tls]               # or DTASK_TLS_CA / _CERT / _KEY
/// ca = "/etc/dtask/tls/ca.pem"
///
/// [worker]            # defaults for `dtask worker` (flags override)
/// nthreads = 4
/// memory-limit-mib = 512
/// resources = { GPU = 1 }
///
/// [task]              # defaults for `dtask submit` and `dtask map`
/// timeout = "10m"
/// retries = 2
/// memory-limit-mib = 64
/// ```
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FileConfig {
    /// Scheduler address, `host:port`.
    pub scheduler: Option<String>,
    /// File holding the client token.
    pub token_file: Option<PathBuf>,
    /// File holding the worker token (what `dtask worker` presents).
    pub worker_token_file: Option<PathBuf>,
    /// Worker defaults.
    #[serde(default)]
    pub worker: WorkerDefaults,
    /// TLS files ([`crate::tls`]).
    #[serde(default)]
    pub tls: TlsSection,
    /// Task defaults.
    #[serde(default)]
    pub task: TaskDefaults,
}

/// `[tls]` in `dtask.toml`: the PEM files of [`crate::tls`].
#[derive(Debug, Default, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    /// The cluster's CA certificate.
    pub ca: Option<PathBuf>,
    /// This process's certificate.
    pub cert: Option<PathBuf>,
    /// This process's private key.
    pub key: Option<PathBuf>,
}

/// `[worker]` in `dtask.toml`.
#[derive(Debug, Default, Deserialize, Clone)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct WorkerDefaults {
    /// Execution slots.
    pub nthreads: Option<u32>,
    /// Largest memory one task may use, in MiB.
    pub memory_limit_mib: Option<usize>,
    /// Abstract resources offered.
    pub resources: Option<std::collections::BTreeMap<String, f64>>,
    /// Bytes of results kept in memory before spilling, e.g. `"2GiB"`.
    pub memory_budget: Option<String>,
    /// How much of a finished task's memory stays mapped for the next, e.g.
    /// `"256MiB"`.
    pub keep_task_memory: Option<String>,
    /// Steps of the clocks tasks read, e.g. `"1ms"`; `"0"` for the host's.
    pub clock_resolution: Option<String>,
    /// Pooled task instances (tasks running or waiting in host calls, and
    /// actors, at once).
    pub instances: Option<u32>,
    /// Task instances at once, pooled and set up on demand.
    pub max_instances: Option<u32>,
}

/// `[task]` in `dtask.toml`.
#[derive(Debug, Default, Deserialize, Clone)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct TaskDefaults {
    /// Wall-clock limit per run, e.g. `"30s"`.
    pub timeout: Option<String>,
    /// Retries after an error.
    pub retries: Option<u32>,
    /// Default memory limit of one run, in MiB.
    pub memory_limit_mib: Option<u64>,
}

/// The first config file that exists, with its path.
pub fn file_config() -> Result<Option<(PathBuf, FileConfig)>, String> {
    for path in config_files() {
        if let Some(c) = load_file(&path)? {
            return Ok(Some((path, c)));
        }
    }
    Ok(None)
}

/// A scheduler to talk to, and where that choice came from.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// `host:port`.
    pub address: String,
    /// Cluster token.
    pub token: String,
    /// Where the address came from, for messages.
    pub source: String,
}

/// What [`resolve`] found.
#[derive(Debug)]
pub enum Resolved {
    /// A configured scheduler.
    Configured(Endpoint),
    /// Nothing configured: use (or start) the local default cluster.
    LocalDefault,
}

/// Where config files are looked for, in order.
pub fn config_files() -> Vec<PathBuf> {
    let xdg = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| home().join(".config"));
    vec![PathBuf::from("dtask.toml"), xdg.join("dtask/config.toml")]
}

fn load_file(path: &Path) -> Result<Option<FileConfig>, String> {
    match std::fs::read_to_string(path) {
        Ok(text) => toml::from_str(&text)
            .map(Some)
            .map_err(|e| format!("{} is not a valid dtask config: {e}", path.display())),
        Err(_) => Ok(None),
    }
}

/// The configured scheduler address and where it came from, if any
/// (`None`: use the local default).
pub fn resolve_address(explicit: Option<&str>) -> Result<Option<(String, String)>, String> {
    if let Some(a) = explicit {
        return Ok(Some((a.to_string(), "--scheduler".to_string())));
    }
    if let Some(a) = std::env::var("DTASK_SCHEDULER")
        .ok()
        .filter(|a| !a.is_empty())
    {
        return Ok(Some((a, "DTASK_SCHEDULER".to_string())));
    }
    Ok(file_config()?.and_then(|(path, c)| c.scheduler.map(|a| (a, path.display().to_string()))))
}

/// Finds the scheduler to use, per the order in the module docs.
pub fn resolve(explicit: Option<&str>) -> Result<Resolved, String> {
    let Some((address, source)) = resolve_address(explicit)? else {
        return Ok(Resolved::LocalDefault);
    };
    let token_file = file_config()?.and_then(|(_, c)| c.token_file);
    let token = client_token(token_file.as_deref())?;
    Ok(Resolved::Configured(Endpoint {
        address,
        token,
        source,
    }))
}

/// The token a client presents: `DTASK_TOKEN`, else the file
/// `DTASK_TOKEN_FILE` names, else the configured token
/// file, else the state directory's `token`.
pub fn client_token(token_file: Option<&Path>) -> Result<String, String> {
    presented_token("DTASK_TOKEN", token_file.map(Path::to_path_buf), "token")
        .map_err(|e| format!("{e}; set DTASK_TOKEN or `token-file` in dtask.toml"))
}

/// A token to present: the variable `var`, else the file `var`_FILE
/// names, else `configured`, else the state directory's `file`.
fn presented_token(var: &str, configured: Option<PathBuf>, file: &str) -> Result<String, String> {
    if let Ok(t) = std::env::var(var)
        && !t.is_empty()
    {
        return Ok(t);
    }
    if let Some(path) = std::env::var_os(format!("{var}_FILE")).filter(|p| !p.is_empty()) {
        return read_token(Path::new(&path));
    }
    read_token(&configured.unwrap_or_else(|| state_dir().join(file)))
}

/// The token a worker presents: `DTASK_WORKER_TOKEN`, else the file
/// `DTASK_WORKER_TOKEN_FILE` names, else the configured
/// `worker-token-file`, else the state directory's `worker-token`.
pub fn worker_token() -> Result<String, String> {
    let configured = file_config()?.and_then(|(_, c)| c.worker_token_file);
    presented_token("DTASK_WORKER_TOKEN", configured, "worker-token").map_err(|e| {
        format!(
            "{e}; a worker needs the scheduler's worker credential: set DTASK_WORKER_TOKEN \
             or `worker-token-file` in dtask.toml (the scheduler keeps it in its state \
             directory's `worker-token` file)"
        )
    })
}

/// Parses a duration: plain seconds (`10`, `0.5`), or humantime's forms
/// (`250ms`, `10s`, `2m`, `1h 30m`, `2days`).
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let s = s.trim();
    if let Ok(secs) = s.parse::<f64>() {
        return std::time::Duration::try_from_secs_f64(secs)
            .map_err(|_| format!("{s:?} is not a valid duration"));
    }
    humantime::parse_duration(s)
        .map_err(|e| format!("{s:?} is not a duration ({e}); try 500ms, 10s, 2m or 1h 30m"))
}

#[cfg(test)]
mod duration_tests {
    use super::parse_duration;
    use std::time::Duration;

    #[test]
    fn durations_in_seconds_or_with_units() {
        assert_eq!(parse_duration("10").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("0.5").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration(" 2m ").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1h 30m").unwrap(), Duration::from_secs(5400));
        for bad in ["", "-1", "ten", "10 parsecs", "1e400"] {
            let e = parse_duration(bad).unwrap_err();
            assert!(e.contains("duration"), "{bad}: {e}");
        }
    }
}
