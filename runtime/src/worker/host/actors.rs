//! The guest's actors: creating one on a worker, calling its methods and
//! letting it go.

use super::*;

impl<T: HasLink + Send> actor::Host for Guest<'_, T> {
    async fn create(
        &mut self,
        module: Option<String>,
        resource_name: String,
        args: Vec<Item>,
    ) -> wasmtime::Result<Result<String, GuestError>> {
        let task = self.task()?;
        let args = match args
            .into_iter()
            .map(guest_arg)
            .collect::<Result<Vec<_>, _>>()
        {
            Ok(a) => a,
            Err(e) => return Ok(Err(e)),
        };
        let module = module.unwrap_or_else(|| task.module.hash.clone());
        if module == task.module.hash {
            let ctor = crate::module::constructor(&resource_name);
            let checked = task
                .module
                .constructor(&resource_name, "this module")
                .and_then(|_| client::check_args(&task.module, "this module", &ctor, &args));
            if let Err(why) = checked {
                return Ok(Err(GuestError::Other(why)));
            }
        }
        let client = match task.client().await {
            Ok(c) => c,
            Err(e) => return Ok(Err(e)),
        };
        let options = client::ActorOptions::default();
        let created = task
            .blocking(async move {
                client
                    .actor_new_in(&module, &resource_name, args, &options)
                    .await
            })
            .await?;
        Ok(created.map(|a| a.key().to_string()).map_err(guest_error))
    }

    async fn call(
        &mut self,
        key: String,
        method: String,
        args: Vec<Item>,
    ) -> wasmtime::Result<Result<Vec<u8>, GuestError>> {
        let task = self.task()?;
        let client = match task.client().await {
            Ok(c) => c,
            Err(e) => return Ok(Err(e)),
        };
        let called = task
            .blocking(async move {
                let mut call_args = Vec::with_capacity(args.len());
                for item in args {
                    call_args.push(
                        match guest_arg(item).map_err(|e| ClientError::Invalid(format!("{e:?}")))? {
                            Arg::Value(b) => CallArg::Value(b),
                            Arg::Future(k) => {
                                CallArg::Value(value::encode(&client.result(&k).await?).into())
                            }
                        },
                    );
                }
                client
                    .actor(&key)
                    .await?
                    .call_bytes(&method, call_args)
                    .await
            })
            .await?;
        Ok(called.map(|b| b.to_vec()).map_err(guest_error))
    }

    async fn delete(&mut self, key: String) -> wasmtime::Result<Result<(), GuestError>> {
        let task = self.task()?;
        Ok(match task.client().await {
            Ok(c) => c.actor_delete(&key).map_err(guest_error),
            Err(e) => Err(e),
        })
    }
}

impl<T: HasLink + Send> worker::Host for Guest<'_, T> {
    async fn current_key(&mut self) -> wasmtime::Result<String> {
        Ok(self.0.key().to_string())
    }

    async fn worker_id(&mut self) -> wasmtime::Result<String> {
        Ok(self.0.worker_id().to_string())
    }

    async fn current_module(&mut self) -> wasmtime::Result<String> {
        Ok(self.task()?.module.hash.clone())
    }

    async fn secede(&mut self) -> wasmtime::Result<()> {
        let task = self.task()?;
        task.seceded = true;
        task.free_slot();
        Ok(())
    }

    async fn rejoin(&mut self) -> wasmtime::Result<()> {
        let task = self.task()?;
        if task.seceded {
            task.seceded = false;
            task.take_slot().await?;
        }
        Ok(())
    }
}
