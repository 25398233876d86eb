//! An actor's instance: one component instance kept between calls, called
//! one method at a time.

use super::*;

/// A live actor: its store, instance and the resource its methods act on.
/// Calls run one at a time (`&mut self`).
pub struct ActorInstance {
    pub(super) store: Store<Host>,
    pub(super) instance: wasmtime::component::Instance,
    pub(super) handle: wasmtime::component::ResourceAny,
    pub(super) ready: Arc<Ready>,
    pub(super) resource: String,
    pub(super) key: String,
    pub(super) stderr: Capture,
    /// Set once a call trapped: the instance may not be entered again.
    pub(super) broken: Option<TaskError>,
    /// When the call under way must stop (set for each call).
    pub(super) deadline: Deadline,
    /// How long one call may run (past it, it traps and breaks the
    /// actor), and whose limit that is, for the error.
    pub(super) call_limit: Option<(Duration, &'static str)>,
}

/// Whose call limit an actor has when its worker's is the one that bounds
/// it.
pub(super) const WORKER_LIMIT: &str = "the worker's --timeout";

impl ActorInstance {
    /// Whether a call trapped, so the instance takes no more calls.
    pub fn is_broken(&self) -> bool {
        self.broken.is_some()
    }

    /// Calls `method` with `args` (typed by the method's parameters).
    pub async fn call(
        &mut self,
        method: &str,
        args: Vec<crate::protocol::CallArg>,
    ) -> Result<Value, TaskError> {
        let key = self.key.clone();
        if let Some(e) = &self.broken {
            return Err(TaskError {
                message: format!(
                    "actor {key} failed in an earlier call and takes no more calls: {}",
                    e.message
                ),
                ..e.clone()
            });
        }
        let name = format!("[method]{}.{method}", self.resource);
        let Some(sig) = self.ready.module.funcs.get(&name) else {
            let prefix = format!("[method]{}.", self.resource);
            let methods: Vec<&str> = self
                .ready
                .module
                .funcs
                .keys()
                .filter_map(|f| f.strip_prefix(&prefix))
                .collect();
            return Err(task_error(
                &key,
                ErrorKind::Input,
                format!(
                    "{} has no method {method}; its methods: {}",
                    self.resource,
                    methods.join(", ")
                ),
            ));
        };
        // The first parameter is the resource itself.
        let wanted = sig.params.get(1..).unwrap_or_default();
        let mut values = Vec::with_capacity(args.len());
        for (arg, (pname, ty)) in args.iter().zip(wanted) {
            let v = match arg {
                crate::protocol::CallArg::Value(b) => value::decode(b),
                crate::protocol::CallArg::Word(w) => value::word_to_value(w, ty),
                crate::protocol::CallArg::Stdin(b) => value::stdin_to_value(b.to_vec(), ty),
            }
            .map_err(|e| {
                task_error(
                    &key,
                    ErrorKind::Input,
                    format!("{method}: parameter {pname}: {e}"),
                )
            })?;
            values.push(v);
        }
        if args.len() != wanted.len() {
            return Err(task_error(
                &key,
                ErrorKind::Input,
                format!(
                    "{method} takes {} arguments, {} were given",
                    wanted.len(),
                    args.len()
                ),
            ));
        }
        let mut params = vec![Val::Resource(self.handle)];
        params.extend(typed_params(&key, method, wanted, values)?);
        let Entry::Export(index) = sig.entry else {
            return Err(task_error(
                &key,
                ErrorKind::Module,
                format!("{name} is not an export"),
            ));
        };
        let mut results = vec![Val::Bool(false); sig.results.len()];
        // Past its limit, a call running wasm traps at the next epoch tick,
        // and one waiting in a host call is dropped (`within`): either way
        // the instance is not entered again.
        let limit = self.call_limit.map(|(l, _)| l);
        self.deadline.start(limit);
        let outcome = within(limit, async {
            let func = self
                .instance
                .get_func(&mut self.store, index)
                .ok_or_else(|| wasmtime::Error::msg(format!("export {name} vanished")))?;
            func.call_async(&mut self.store, &params, &mut results)
                .await
        })
        .await;
        self.deadline.start(None);
        match outcome {
            Ok(()) => Ok(match results.as_slice() {
                [] => Value::Nil,
                [one] => value::val_to_value(one),
                many => Value::Array(many.iter().map(value::val_to_value).collect()),
            }),
            Err(e) => {
                let mut e = classify(e, self.stderr.text(), &key, Bounds::default());
                if let (ErrorKind::Timeout, Some((limit, whose))) = (e.kind, self.call_limit) {
                    e.message = format!(
                        "actor {key}: {method} ran past its call limit of {limit:?} ({whose}); \
                         the actor takes no more calls: delete it and create it again"
                    );
                }
                self.broken = Some(e.clone());
                Err(e)
            }
        }
    }
}
