//! Futures in the order they end, as a stream (Dask's `as_completed`).

use super::*;

/// Futures in the order they end ([`Client::as_completed`]). Also a
/// [`futures::Stream`] of `(Future, Outcome)`. It ends early if the client
/// loses its scheduler for good ([`Client::lost`]): the futures still
/// [`remaining`](AsCompleted::remaining) then fail as disconnected.
pub struct AsCompleted {
    pub(super) client: Client,
    pub(super) tx: mpsc::UnboundedSender<(String, Outcome)>,
    pub(super) rx: mpsc::UnboundedReceiver<(String, Outcome)>,
    pub(super) waiting: HashMap<String, Vec<Future>>,
    /// Resolves once the client has lost its scheduler for good.
    pub(super) lost: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
}

impl AsCompleted {
    /// Adds a future, even while iterating.
    pub fn add(&mut self, f: Future) {
        let first = !self.waiting.contains_key(&f.key);
        let key = f.key.clone();
        self.waiting.entry(key.clone()).or_default().push(f);
        if first {
            let _ = self.client.watch_into(vec![key], &self.tx);
        }
    }

    /// Futures not yet yielded (Dask's `count()`; named apart from
    /// `StreamExt::count`, which consumes the stream).
    pub fn remaining(&self) -> usize {
        self.waiting.values().map(Vec::len).sum()
    }

    /// The next future to end with how it ended, or `None` when none are
    /// left.
    pub async fn next(&mut self) -> Option<(Future, Outcome)> {
        std::future::poll_fn(|cx| self.poll_one(cx)).await
    }

    /// The next future to end with its result (or error).
    pub async fn next_with_result(&mut self) -> Option<(Future, Result<Value, ClientError>)> {
        let (f, outcome) = self.next().await?;
        let r = self.client.resolve(&f.key, outcome).await;
        Some((f, r))
    }

    /// Waits for one future to end, then also takes every other one that
    /// has ended meanwhile.
    pub async fn next_batch(&mut self) -> Vec<(Future, Outcome)> {
        let mut batch = Vec::new();
        if let Some(first) = self.next().await {
            batch.push(first);
        }
        while let Ok((k, o)) = self.rx.try_recv() {
            if let Some(fs) = self.waiting.remove(&k) {
                batch.extend(fs.into_iter().map(|f| (f, o.clone())));
            }
        }
        batch
    }

    pub(super) fn poll_one(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<(Future, Outcome)>> {
        use std::task::Poll;
        loop {
            if self.waiting.is_empty() {
                return Poll::Ready(None);
            }
            match self.rx.poll_recv(cx) {
                Poll::Pending => {
                    return match std::future::Future::poll(self.lost.as_mut(), cx) {
                        Poll::Ready(()) => Poll::Ready(None),
                        Poll::Pending => Poll::Pending,
                    };
                }
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Ready(Some((k, o))) => {
                    if let Some(mut fs) = self.waiting.remove(&k) {
                        let f = fs.pop().expect("non-empty");
                        if !fs.is_empty() {
                            // Another handle on the same key: report it too.
                            let _ = self.tx.send((k.clone(), o.clone()));
                            self.waiting.insert(k, fs);
                        }
                        return Poll::Ready(Some((f, o)));
                    }
                }
            }
        }
    }
}

impl futures::Stream for AsCompleted {
    type Item = (Future, Outcome);

    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.get_mut().poll_one(cx)
    }
}
