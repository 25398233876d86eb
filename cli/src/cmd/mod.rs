//! One file per verb, plus what they share: finding the scheduler, typed
//! argument parsing, printing values, and failures with exit codes.

pub mod actor;
pub mod as_completed;
pub mod cancel;
pub mod cert;
pub mod cluster;
pub mod dashboard;
pub mod event;
pub mod gather;
pub mod info;
pub mod inspect;
pub mod journal;
pub mod lock;
pub mod logs;
pub mod map;
pub mod progress;
pub mod pubsub;
pub mod queue;
pub mod release;
pub mod retry;
pub mod scatter;
pub mod scheduler;
pub mod semaphore;
pub mod show_config;
pub mod shutdown;
pub mod status;
pub mod submit;
pub mod task_options;
pub mod tasks;
pub mod var;
pub mod wait;
pub mod who_has;
pub mod worker;
pub mod workers;

use dtask_runtime::client::{Client, ClientError, Item};
use dtask_runtime::config::{self, Resolved};
use dtask_runtime::local;
use dtask_runtime::module::{LocalModule, Type};
use dtask_runtime::protocol::{Arg, TaskError};
use dtask_runtime::value::{self, Value};
use std::io::{BufRead, Read, Write};
use std::path::Path;
use std::time::Duration;

/// Most keys a verb watches at once (asked about and not yet answered).
/// Watching a million finished keys at once would have the scheduler
/// answer them all in one burst, past what it may queue for one client
/// (`--client-buffer`, 64 MiB with results inline): the verb would be cut
/// off, reconnect, ask again, and never finish. A window keeps every burst
/// well under that (at most about 18 MB) at no cost in throughput.
pub const WATCH_WINDOW: usize = 16_384;

// Which scheduler a client verb (or a worker) talks to. (A plain comment:
// clap would take a doc comment for the help text of every verb.)
#[derive(clap::Args, Clone, Debug, Default)]
pub struct Global {
    /// Scheduler address (host:port). Else DTASK_SCHEDULER, dtask.toml, or
    /// the local default cluster.
    #[arg(long, global = true, value_name = "ADDR")]
    pub scheduler: Option<String>,
    #[command(flatten)]
    pub tls: TlsArgs,
}

// The TLS files a process uses (DESIGN §8; `dtask_runtime::tls`). (A
// plain comment, as for `Global`.)
#[derive(clap::Args, Clone, Debug, Default)]
pub struct TlsArgs {
    /// The cluster's CA certificate (PEM): connect over TLS and trust
    /// peers it signed. Else `ca` under [tls] in dtask.toml.
    #[arg(long, global = true, env = "DTASK_TLS_CA", value_name = "FILE")]
    pub tls_ca: Option<std::path::PathBuf>,
    /// This process's certificate (PEM), presented by schedulers and
    /// workers (`dtask cert init` makes one).
    #[arg(long, global = true, env = "DTASK_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<std::path::PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, global = true, env = "DTASK_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<std::path::PathBuf>,
}

impl TlsArgs {
    /// The files to use: these flags (and their variables), else `[tls]`
    /// in the config file.
    pub fn files(&self) -> Result<dtask_runtime::tls::TlsFiles, Failure> {
        let file = config::file_config()
            .map_err(Failure::usage)?
            .map(|(_, c)| c.tls)
            .unwrap_or_default();
        Ok(dtask_runtime::tls::TlsFiles {
            ca: self.tls_ca.clone().or(file.ca),
            cert: self.tls_cert.clone().or(file.cert),
            key: self.tls_key.clone().or(file.key),
        })
    }

    /// Sets up this process's TLS from [`TlsArgs::files`]; a file that
    /// cannot be used is a usage error naming it.
    pub fn install(&self) -> Result<dtask_runtime::tls::TlsFiles, Failure> {
        let files = self.files()?;
        dtask_runtime::tls::install(&files).map_err(Failure::usage)?;
        Ok(files)
    }
}

// A verb's own arguments, with `--scheduler`: daemons that are the
// scheduler (`scheduler`, `cluster`) and verbs that need none (`inspect`,
// `journal`) do not take it. (A plain comment, as for `Global`.)
#[derive(clap::Args)]
pub struct WithScheduler<T: clap::Args> {
    #[command(flatten)]
    pub global: Global,
    #[command(flatten)]
    pub args: T,
}

/// Why a command failed: its exit code and what to tell the user.
pub struct Failure {
    /// Exit status (DESIGN §4).
    pub code: u8,
    /// One line after `dtask: error: `.
    pub message: String,
    /// Indented detail lines (guest stderr, backtrace).
    pub detail: Vec<String>,
}

impl Failure {
    /// A failure without detail.
    pub fn new(code: u8, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            detail: Vec::new(),
        }
    }

    /// A usage or input error (exit 2).
    pub fn usage(message: impl Into<String>) -> Self {
        Self::new(2, message)
    }

    /// Writing output failed (exit 2).
    pub fn write(e: std::io::Error) -> Self {
        Self::new(2, format!("cannot write: {e}"))
    }

    /// A failed task (exit 1), with what the guest said and where.
    pub fn task(key: &str, e: &TaskError) -> Self {
        let mut detail = Vec::new();
        if e.origin != key {
            detail.push(format!("{key} depends on {}, which failed", e.origin));
        }
        detail.push(format!("kind: {}", e.kind.name()));
        if !e.stderr.trim().is_empty() {
            detail.push("guest stderr:".into());
            detail.extend(e.stderr.trim_end().lines().map(|l| format!("  {l}")));
        }
        if !e.backtrace.trim().is_empty() {
            detail.push("wasm backtrace:".into());
            detail.extend(e.backtrace.trim_end().lines().map(|l| format!("  {l}")));
        }
        Self {
            code: 1,
            message: e.message.clone(),
            detail,
        }
    }

    /// Prints the failure to stderr.
    pub fn report(&self) {
        eprintln!("dtask: error: {}", self.message);
        for line in &self.detail {
            eprintln!("    {line}");
        }
    }
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Self {
        match &e {
            ClientError::Connect { .. } | ClientError::Disconnected => {
                Failure::new(3, e.to_string())
            }
            ClientError::Task(t) => Failure::task(&t.origin, t),
            ClientError::Timeout(_) => Failure::new(4, e.to_string()),
            ClientError::Data { .. } | ClientError::Cancelled(_) | ClientError::ActorLost(_) => {
                Failure::new(1, e.to_string())
            }
            ClientError::Refused(_)
            | ClientError::UnknownKey(_)
            | ClientError::Invalid(_)
            | ClientError::Unavailable(_) => Failure::usage(e.to_string()),
        }
    }
}

/// Connects to the scheduler the configuration names. With nothing
/// configured, uses the local default cluster, starting it only if `start`
/// (verbs that submit work start it; verbs that read keys need one running).
pub async fn connect(global: &Global, start: bool) -> Result<Client, Failure> {
    let configured =
        config::resolve_address(global.scheduler.as_deref()).map_err(Failure::usage)?;
    let resolved = match configured {
        Some((address, source)) => {
            let token_file = config::file_config()
                .map_err(Failure::usage)?
                .and_then(|(_, c)| c.token_file);
            // No credential is an authentication failure (exit 3), not a
            // usage error.
            let token =
                config::client_token(token_file.as_deref()).map_err(|e| Failure::new(3, e))?;
            Resolved::Configured(config::Endpoint {
                address,
                token,
                source,
            })
        }
        None => Resolved::LocalDefault,
    };
    let endpoint = match resolved {
        Resolved::Configured(e) => e,
        Resolved::LocalDefault if start => {
            let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
            local::ensure(workers)
                .await
                .map_err(|e| Failure::new(3, e))?
        }
        Resolved::LocalDefault => local::running().await.ok_or_else(|| {
            Failure::new(
                3,
                "no scheduler is configured and no local cluster is running; \
                 submit a task to start one, or pass --scheduler",
            )
        })?,
    };
    let name = std::env::var("DTASK_CLIENT").unwrap_or_else(|_| "default".into());
    Client::connect(&endpoint.address, &endpoint.token, Some(name))
        .await
        .map_err(|e| {
            let mut f = Failure::from(e);
            f.detail
                .push(format!("scheduler address from {}", endpoint.source));
            f
        })
}

/// Loads a module file, with the compiled-module cache of the state
/// directory.
pub fn load_module(path: &Path) -> Result<LocalModule, Failure> {
    LocalModule::load(path).map_err(Failure::usage)
}

/// Parses shell words into arguments of `function`, by parameter type:
/// `@KEY` is a future, `@@…` a literal `@…`, `-` reads stdin. For a WASI
/// command see [`command_args`].
pub fn parse_args(
    module: &LocalModule,
    function: &str,
    words: &[String],
) -> Result<Vec<Arg>, Failure> {
    let sig = module
        .types
        .func(function, &module.name)
        .map_err(Failure::usage)?;
    if module.types.kind().is_command() {
        return command_args(module, words);
    }
    if words.len() != sig.params.len() {
        return Err(Failure::usage(dtask_runtime::client::arity_message(
            &sig.to_wit(),
            sig.params.len(),
            words.len(),
        )));
    }
    let mut stdin_used = false;
    words
        .iter()
        .zip(&sig.params)
        .map(|(word, (name, ty))| {
            let at = |e: String| Failure::usage(format!("{function}: parameter {name}: {e}"));
            if let Some(rest) = word.strip_prefix('@')
                && !rest.starts_with('@')
            {
                dtask_runtime::key::validate_key(rest).map_err(at)?;
                return Ok(Arg::Future(rest.to_string()));
            }
            let v = if word == "-" {
                if std::mem::replace(&mut stdin_used, true) {
                    return Err(at("stdin (`-`) can be read by one argument only".into()));
                }
                stdin_value(ty).map_err(at)?
            } else {
                let word = word
                    .strip_prefix('@')
                    .filter(|w| w.starts_with('@'))
                    .unwrap_or(word);
                value::word_to_value(word, ty).map_err(|e| at(e.to_string()))?
            };
            Ok(Arg::Value(value::encode(&v).into()))
        })
        .collect()
}

/// A WASI command's task arguments `[stdin, argv]` from shell words.
///
/// Every word is one argv string, verbatim, after argv[0] (the module file's
/// stem), except that one word may set stdin: `<@KEY` to a future's result,
/// `<-` to this process's stdin. `<<-` and `<<@…` pass `<-` and `<@…`
/// literally. Without either, stdin is empty.
fn command_args(module: &LocalModule, words: &[String]) -> Result<Vec<Arg>, Failure> {
    let program = Path::new(&module.name)
        .file_stem()
        .map_or_else(|| module.name.clone(), |s| s.to_string_lossy().into_owned());
    let mut argv = vec![Value::from(program)];
    let mut stdin: Option<Arg> = None;
    for word in words {
        if word != "<-" && !word.starts_with("<@") {
            let literal = match word.strip_prefix('<') {
                Some(rest) if rest == "<-" || rest.starts_with("<@") => rest,
                _ => word.as_str(),
            };
            argv.push(Value::from(literal));
            continue;
        }
        if stdin.is_some() {
            return Err(Failure::usage(format!(
                "a command has one stdin; `{word}` is the second of `<-` or `<@KEY` \
                 (use `<<-` or `<<@…` for a literal argument)"
            )));
        }
        stdin = Some(match word.strip_prefix("<@") {
            Some(key) => {
                dtask_runtime::key::validate_key(key)
                    .map_err(|e| Failure::usage(format!("stdin ({word}): {e}")))?;
                Arg::Future(key.to_string())
            }
            None => {
                let mut bytes = Vec::new();
                std::io::stdin()
                    .read_to_end(&mut bytes)
                    .map_err(|e| Failure::usage(format!("cannot read stdin: {e}")))?;
                Arg::Value(value::encode(&Value::Binary(bytes)).into())
            }
        });
    }
    let stdin = stdin.unwrap_or_else(|| Arg::Value(value::encode(&Value::Nil).into()));
    Ok(vec![
        stdin,
        Arg::Value(value::encode(&Value::Array(argv)).into()),
    ])
}

fn stdin_value(ty: &Type) -> Result<Value, String> {
    let mut bytes = Vec::new();
    std::io::stdin()
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read stdin: {e}"))?;
    match ty {
        Type::List(l) if matches!(l.ty(), Type::U8) => Ok(Value::Binary(bytes)),
        Type::String => {
            let mut s =
                String::from_utf8(bytes).map_err(|_| "stdin is not UTF-8 text".to_string())?;
            if s.ends_with('\n') {
                s.pop();
            }
            Ok(Value::from(s))
        }
        _ => {
            let j: serde_json::Value =
                serde_json::from_slice(&bytes).map_err(|e| format!("stdin is not JSON: {e}"))?;
            value::json_to_value(&j, ty).map_err(|e| e.to_string())
        }
    }
}

/// Keys from the arguments, or else streamed from stdin one per line as
/// they arrive (so a verb can start before its producer has finished).
pub fn key_stream(args: Vec<String>) -> tokio::sync::mpsc::UnboundedReceiver<String> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    if args.is_empty() {
        std::thread::spawn(move || {
            for line in std::io::stdin().lock().lines() {
                let Ok(line) = line else { return };
                let k = line.trim();
                if !k.is_empty() && tx.send(k.to_string()).is_err() {
                    return;
                }
            }
        });
    } else {
        for k in args {
            let _ = tx.send(k);
        }
    }
    rx
}

/// Keys from the arguments, or else one per line of stdin.
pub fn keys_from(args: Vec<String>) -> Result<Vec<String>, Failure> {
    if !args.is_empty() {
        return Ok(args);
    }
    let mut keys = Vec::new();
    for line in std::io::stdin().lock().lines() {
        let line = line.map_err(|e| Failure::usage(format!("cannot read keys from stdin: {e}")))?;
        let line = line.trim();
        if !line.is_empty() {
            keys.push(line.to_string());
        }
    }
    Ok(keys)
}

/// A value as one line of output: JSON, or with `raw` strings and bytes as
/// they are.
pub fn render(v: &Value, raw: bool) -> Vec<u8> {
    match v {
        Value::String(s) if raw => s.as_bytes().to_vec(),
        Value::Binary(b) if raw => b.clone(),
        _ => value::value_to_json(v).to_string().into_bytes(),
    }
}

/// Parses a size as [`bytesize`] reads it: bytes, or a number with a
/// binary unit (`KiB`, `MiB`, `GiB`, or `Ki`, `Mi`, `Gi`) or a decimal one
/// (`KB`, `MB`, `GB`, or `K`, `M`, `G`); `1.5GiB` and `512 MiB` are sizes too.
pub fn parse_size(s: &str) -> Result<usize, String> {
    let size: bytesize::ByteSize = s
        .trim()
        .parse()
        .map_err(|e| format!("{s:?} is not a size (e.g. 64KiB, 512MiB, 1GiB): {e}"))?;
    usize::try_from(size.as_u64()).map_err(|_| format!("{s:?} is too large"))
}

pub use dtask_runtime::config::parse_duration;

/// An item for a queue or variable from a shell word, with no WIT type to
/// guide it: `@KEY` is a future (the scheduler refuses keys it does not
/// know), `-` reads stdin (less one trailing newline), anything else is
/// [`untyped_value`] (`@@…` being a literal `@…`).
pub fn item_from_word(word: &str) -> Result<Arg, Failure> {
    if let Some(rest) = word.strip_prefix('@')
        && !rest.starts_with('@')
    {
        dtask_runtime::key::validate_key(rest)
            .map_err(|e| Failure::usage(format!("VALUE {word}: {e}")))?;
        return Ok(Arg::Future(rest.to_string()));
    }
    let v = if word == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| Failure::usage(format!("cannot read VALUE from stdin: {e}")))?;
        let text = text
            .strip_suffix('\n')
            .map_or(text.as_str(), |t| t.strip_suffix('\r').unwrap_or(t));
        untyped_value(text)?
    } else {
        untyped_value(word.strip_prefix('@').unwrap_or(word))?
    };
    Ok(Arg::Value(value::encode(&v).into()))
}

/// A value from text with no WIT type to guide it: JSON if it parses
/// (`42`, `2.5`, `true`, `null`, `"text"`, `[1, 2]`, `{"a": 1}`), else the
/// text itself as a string (`hello`). Text that starts like a JSON string,
/// array or object (`"`, `[`, `{`) must be valid JSON: a typo there should
/// not quietly become a string.
pub fn untyped_value(text: &str) -> Result<Value, Failure> {
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(j) => Ok(value::untyped_json_to_value(&j)),
        Err(e) if text.trim_start().starts_with(['"', '[', '{']) => Err(Failure::usage(format!(
            "VALUE {text:?} starts like JSON but is not valid JSON: {e}"
        ))),
        Err(_) => Ok(Value::from(text)),
    }
}

/// Prints an item taken from a queue or variable: a value as one line
/// ([`render`]), a future as its key. The CLI's named client
/// (`DTASK_CLIENT`) now holds that key, until `dtask release KEY`.
pub fn print_item(item: Item, raw: bool) -> Result<(), Failure> {
    let line = match item {
        Item::Value(v) => render(&v, raw),
        Item::Future(f) => {
            let key = f.key().as_bytes().to_vec();
            // The scheduler made the named client a holder; dropping the
            // handle would give that up.
            std::mem::forget(f);
            key
        }
    };
    let mut out = std::io::stdout().lock();
    out.write_all(&line)
        .and_then(|()| out.write_all(b"\n"))
        .and_then(|()| out.flush())
        .map_err(Failure::write)
}

/// A client error as a failure, with `message` for a timeout (exit 4).
/// Runs `work`, a verb that waits, within `timeout` if one is given;
/// past it, exit 4 saying what was not done (`what`) and what to do next.
pub async fn within(
    timeout: Option<Duration>,
    what: &str,
    next: &str,
    work: impl std::future::Future<Output = Result<(), Failure>>,
) -> Result<(), Failure> {
    match timeout {
        None => work.await,
        Some(t) => tokio::time::timeout(t, work)
            .await
            .unwrap_or_else(|_| Err(Failure::new(4, format!("{what} after {t:?}; {next}")))),
    }
}

pub fn on_timeout(e: ClientError, message: impl FnOnce(Duration) -> String) -> Failure {
    match e {
        ClientError::Timeout(t) => Failure::new(4, message(t)),
        other => other.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes_read_binary_and_decimal_units_and_refuse_the_rest() {
        assert_eq!(parse_size("512MiB"), Ok(512 << 20));
        assert_eq!(parse_size("64 KiB"), Ok(64 << 10));
        assert_eq!(parse_size("1.5GiB"), Ok(3 << 29));
        assert_eq!(parse_size("2MB"), Ok(2_000_000));
        assert_eq!(parse_size("4096"), Ok(4096));
        for bad in ["", "MiB", "12 parsecs", "-1MiB"] {
            let e = parse_size(bad).unwrap_err();
            assert!(e.contains("is not a size"), "{bad}: {e}");
        }
    }
}
