//! Running a WASI command: a preview 2 command component or a preview 1
//! core module, its stdin and argv the task's arguments, its stdout the
//! result.

use super::stdin::{FileStdin, Stdin};
use super::stdout::{self, Stdout};
use super::*;

impl Sandbox {
    /// Runs a WASI command with `argv` and `stdin`, returning what it wrote
    /// to stdout. A non-zero exit status is an [`ErrorKind::Exit`] error
    /// carrying the command's stderr.
    pub async fn run_command(
        &self,
        ready: &Ready,
        key: &str,
        stdin: Vec<u8>,
        argv: Vec<String>,
        timeout: Option<Duration>,
    ) -> Result<Vec<u8>, TaskError> {
        let limits = RunLimits {
            timeout,
            ..RunLimits::default()
        };
        let (instance, copy) = self.instance_for(ready, key, None, timeout).await?;
        let ready = copy.map_or(ready, |c| &**c);
        let stdin = Stdin::Bytes(stdin.into());
        let out = self.command(ready, instance, key, (stdin, argv), limits, None);
        match out.await?.into_value() {
            Value::Binary(b) => Ok(b),
            _ => Err(task_error(
                key,
                ErrorKind::Internal,
                format!("the worker could not read back what task {key} wrote to stdout"),
            )),
        }
    }

    /// Runs a WASI command on `input` (its stdin and argv) in `instance`,
    /// its stdout (its result) taken as it is written (see [`stdout`]).
    pub(super) async fn command(
        &self,
        ready: &Ready,
        instance: Instance,
        key: &str,
        (stdin, argv): (Stdin, Vec<String>),
        limits: RunLimits,
        link: Option<TaskLink>,
    ) -> Result<Output, TaskError> {
        let timeout = limits.timeout;
        // A command's stdout (its result) may be as large as the task's
        // memory, or, with a worker's results to spill to, its disk.
        let (cap, raise) = self.memory_for(limits.memory);
        let stdout = Stdout::new(cap, limits.spill.clone());
        let stderr = limits.output.stderr.clone();
        let mut wasi = super::clocks::builder(self.limits.clock_resolution);
        match stdin {
            Stdin::Bytes(b) => wasi.stdin(MemoryInputPipe::new(b)),
            Stdin::File(f) => wasi.stdin(FileStdin::new(f)),
        };
        wasi.stdout(Out(stdout.clone()))
            .stderr(Out(stderr.clone()))
            .args(&argv);
        grant(&mut wasi, &limits.grants).map_err(|m| task_error(key, ErrorKind::Input, m))?;
        // The exit status, or the error that ended the program otherwise.
        let status: wasmtime::Result<i32> = match &ready.pre {
            Pre::Command(pre) => {
                let mut host = self.host(wasi.build(), key, link);
                host.limits = self.store_limits_under(limits.memory);
                let mut store = self.store(ready, host, Deadline::after(timeout), instance);
                within(timeout, async {
                    let command = pre.instantiate_async(&mut store).await?;
                    let run = command.wasi_cli_run().call_run(&mut store).await?;
                    Ok(if run.is_ok() { 0 } else { 1 })
                })
                .await
            }
            Pre::Core(pre) => {
                let host = CoreHost {
                    wasi: wasi.build_p1(),
                    limits: self.store_limits_under(limits.memory),
                };
                let mut store = self.store(ready, host, Deadline::after(timeout), instance);
                within(timeout, async {
                    let instance = pre.instantiate_async(&mut store).await?;
                    let start = instance.get_typed_func::<(), ()>(&mut store, COMMAND_FUNCTION)?;
                    start.call_async(&mut store, ()).await?;
                    Ok(0)
                })
                .await
            }
            Pre::Exports(_) => {
                return Err(task_error(
                    key,
                    ErrorKind::Module,
                    format!("module {} is not a WASI command", ready.module.hash),
                ));
            }
        };
        let status = status.or_else(|e| match e.downcast_ref::<I32Exit>() {
            Some(I32Exit(code)) => Ok(*code),
            None => Err(e),
        });
        let captured = || stderr.text();
        let out = match stdout.take() {
            Ok(out) => out,
            Err(failure) => {
                let message = match failure {
                    stdout::Failure::OverCap => format!(
                        "task {key} wrote more than {} to stdout, its memory limit; {raise}",
                        value::human_bytes(cap as u64),
                    ),
                    stdout::Failure::Refused(why) => format!("task {key}: {why}"),
                };
                return Err(TaskError {
                    stderr: captured(),
                    ..task_error(key, ErrorKind::Memory, message)
                });
            }
        };
        match status {
            Ok(0) => Ok(match out {
                stdout::Taken::Memory(encoded) => Output::Encoded(encoded),
                stdout::Taken::File(file) => Output::Spilled(file),
            }),
            Ok(code) => Err(TaskError {
                stderr: captured(),
                ..task_error(
                    key,
                    ErrorKind::Exit,
                    format!("task {key} exited with status {code}"),
                )
            }),
            Err(e) => Err(classify(
                e,
                captured(),
                key,
                Bounds {
                    timeout,
                    memory: Some(self.memory_for(limits.memory)),
                },
            )),
        }
    }
}

/// A command task's stdin bytes and argv from its arguments `[stdin, argv]`.
///
/// Stdin is nil (empty), bytes (as they are), a string (its UTF-8), or any
/// other value (its JSON text), so any future's result can be piped in.
pub(super) fn command_input(
    ready: &Ready,
    key: &str,
    function: &str,
    args: Vec<TaskArg>,
) -> Result<(Stdin, Vec<String>), TaskError> {
    let err = |kind, message: String| task_error(key, kind, message);
    let name = format!("module {}", ready.module.hash);
    ready
        .module
        .func(function, &name)
        .map_err(|e| err(ErrorKind::Module, e))?;
    let given = args.len();
    let Ok([stdin, argv]) = <[TaskArg; 2]>::try_from(args) else {
        return Err(err(
            ErrorKind::Input,
            format!("{function}: a command takes 2 arguments (stdin, argv), {given} were given"),
        ));
    };
    // A big stdin stays the bytes that arrived: the command reads it with
    // no copy made here.
    let stdin = match stdin {
        TaskArg::File(f) => Stdin::File(f),
        TaskArg::Bytes(b) => Stdin::Bytes(b),
        TaskArg::Value(Value::Nil) => Stdin::Bytes(bytes::Bytes::new()),
        TaskArg::Value(Value::Binary(b)) => Stdin::Bytes(b.into()),
        TaskArg::Value(Value::String(s)) => Stdin::Bytes(s.into_bytes().into()),
        TaskArg::Value(other) => Stdin::Bytes(value::value_to_json(&other).to_string().into()),
    };
    let argv = argv.into_value();
    let bad_argv = || {
        err(
            ErrorKind::Input,
            format!("{function}: parameter argv: expected a list of strings, got {argv}"),
        )
    };
    let Value::Array(words) = &argv else {
        return Err(bad_argv());
    };
    let argv = words
        .iter()
        .map(|w| w.as_str().map(str::to_string).ok_or_else(bad_argv))
        .collect::<Result<Vec<String>, _>>()?;
    Ok((stdin, argv))
}
