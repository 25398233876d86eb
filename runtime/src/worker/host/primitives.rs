//! The guest's queues, variables, locks, semaphores, events and pub/sub,
//! each call a primitive operation on the scheduler.

use super::*;

impl<T: HasLink + Send> queue::Host for Guest<'_, T> {
    async fn put(
        &mut self,
        name: String,
        item: Item,
        maxsize: Option<u64>,
        timeout: Option<u64>,
    ) -> wasmtime::Result<Result<(), GuestError>> {
        let item = match guest_arg(item) {
            Ok(a) => a,
            Err(e) => return Ok(Err(e)),
        };
        let op = Op::QueuePut {
            name,
            item,
            maxsize,
            timeout_ms: timeout,
        };
        self.task()?.done(op).await
    }

    async fn get(
        &mut self,
        name: String,
        timeout: Option<u64>,
    ) -> wasmtime::Result<Result<Item, GuestError>> {
        let op = Op::QueueGet {
            name,
            timeout_ms: timeout,
        };
        self.task()?.item(op).await
    }

    async fn len(&mut self, name: String) -> wasmtime::Result<Result<u64, GuestError>> {
        Ok(match self.task()?.primitive(Op::QueueLen { name }).await? {
            Ok(OpReply::Len(n)) => Ok(n),
            Ok(other) => Err(unexpected(other)),
            Err(e) => Err(e),
        })
    }
}

impl<T: HasLink + Send> variable::Host for Guest<'_, T> {
    async fn set(&mut self, name: String, item: Item) -> wasmtime::Result<Result<(), GuestError>> {
        let item = match guest_arg(item) {
            Ok(a) => a,
            Err(e) => return Ok(Err(e)),
        };
        self.task()?.done(Op::VarSet { name, item }).await
    }

    async fn get(
        &mut self,
        name: String,
        timeout: Option<u64>,
    ) -> wasmtime::Result<Result<Item, GuestError>> {
        let op = Op::VarGet {
            name,
            timeout_ms: timeout,
        };
        self.task()?.item(op).await
    }

    async fn delete(&mut self, name: String) -> wasmtime::Result<Result<(), GuestError>> {
        self.task()?.done(Op::VarDel { name }).await
    }
}

impl<T: HasLink + Send> lock::Host for Guest<'_, T> {
    async fn acquire(
        &mut self,
        name: String,
        timeout: Option<u64>,
    ) -> wasmtime::Result<Result<(), GuestError>> {
        let op = Op::LockAcquire {
            name,
            timeout_ms: timeout,
        };
        self.task()?.done(op).await
    }

    async fn release(&mut self, name: String) -> wasmtime::Result<Result<(), GuestError>> {
        self.task()?.done(Op::LockRelease { name }).await
    }
}

impl<T: HasLink + Send> semaphore::Host for Guest<'_, T> {
    async fn acquire(
        &mut self,
        name: String,
        max_leases: u32,
        timeout: Option<u64>,
    ) -> wasmtime::Result<Result<(), GuestError>> {
        let op = Op::SemAcquire {
            name,
            max_leases,
            timeout_ms: timeout,
        };
        self.task()?.done(op).await
    }

    async fn release(&mut self, name: String) -> wasmtime::Result<Result<(), GuestError>> {
        self.task()?.done(Op::SemRelease { name }).await
    }
}

impl<T: HasLink + Send> event::Host for Guest<'_, T> {
    async fn set(&mut self, name: String) -> wasmtime::Result<Result<(), GuestError>> {
        self.task()?.done(Op::EventSet { name }).await
    }

    async fn clear(&mut self, name: String) -> wasmtime::Result<Result<(), GuestError>> {
        self.task()?.done(Op::EventClear { name }).await
    }

    async fn wait(
        &mut self,
        name: String,
        timeout: Option<u64>,
    ) -> wasmtime::Result<Result<(), GuestError>> {
        let op = Op::EventWait {
            name,
            timeout_ms: timeout,
        };
        self.task()?.done(op).await
    }

    async fn is_set(&mut self, name: String) -> wasmtime::Result<Result<bool, GuestError>> {
        Ok(
            match self.task()?.primitive(Op::EventIsSet { name }).await? {
                Ok(OpReply::Flag(set)) => Ok(set),
                Ok(other) => Err(unexpected(other)),
                Err(e) => Err(e),
            },
        )
    }
}

impl<T: HasLink + Send> pubsub::Host for Guest<'_, T> {
    async fn publish(
        &mut self,
        topic: String,
        message: Vec<u8>,
    ) -> wasmtime::Result<Result<(), GuestError>> {
        let task = self.task()?;
        if let Err(e) = value::decode(&message) {
            return Ok(Err(GuestError::Other(format!(
                "a message is not valid MessagePack: {e}"
            ))));
        }
        Ok(match task.client().await {
            Ok(c) => c.publish_bytes(&topic, message.into()).map_err(guest_error),
            Err(e) => Err(e),
        })
    }
}

impl<T: HasLink + Send> pubsub::HostSubscription for Guest<'_, T> {
    async fn new(&mut self, topic: String) -> wasmtime::Result<Resource<GuestSubscription>> {
        let task = self.task()?;
        let client = task
            .client()
            .await
            .map_err(|e| wasmtime::Error::msg(format!("cannot subscribe to {topic}: {e:?}")))?;
        let sub = client
            .subscribe(&topic)
            .await
            .map_err(|e| wasmtime::Error::msg(format!("cannot subscribe to {topic}: {e}")))?;
        let sub = GuestSubscription(Arc::new(tokio::sync::Mutex::new(sub)));
        Ok(task.table.push(sub)?)
    }

    async fn next(
        &mut self,
        sub: Resource<GuestSubscription>,
        timeout: Option<u64>,
    ) -> wasmtime::Result<Result<Vec<u8>, GuestError>> {
        let task = self.task()?;
        let shared = task.table.get(&sub)?.0.clone();
        let limit = millis(timeout);
        let got = task
            .blocking(async move { shared.lock().await.next_bytes(limit).await })
            .await?;
        Ok(got.map(|b| b.to_vec()).map_err(guest_error))
    }

    async fn drop(&mut self, sub: Resource<GuestSubscription>) -> wasmtime::Result<()> {
        self.task()?.table.delete(sub)?;
        Ok(())
    }
}
