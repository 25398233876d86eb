//! Worker data ports: how results move between workers, and from a worker
//! to a client, without passing through the scheduler.

use crate::connection::{self, DEFAULT_MAX_FRAME};
use crate::protocol::{FromPeer, Hello, PROTOCOL_VERSION, Role, ToPeer};
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::net::TcpListener;

/// Results a worker holds, by key.
pub type Store = Arc<Mutex<HashMap<String, Bytes>>>;

/// Serves `Fetch` requests for the results in `store` until the task is
/// dropped.
pub async fn serve(listener: TcpListener, token: String, store: Store) {
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            continue;
        };
        let token = token.clone();
        let store = store.clone();
        tokio::spawn(async move {
            let admitted = connection::accept::<ToPeer, FromPeer>(
                stream,
                &token,
                DEFAULT_MAX_FRAME,
                |h: &Hello| match h.role {
                    Role::Peer => Ok(0),
                    _ => {
                        Err("this is a worker's data port; connect to the scheduler instead".into())
                    }
                },
            )
            .await;
            let (_, _, tx, mut rx) = match admitted {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!("refused data connection from {peer}: {e}");
                    return;
                }
            };
            while let Ok(Some(ToPeer::Fetch { id, keys })) = rx.recv().await {
                let values = {
                    let held = store.lock().expect("result store lock");
                    keys.into_iter()
                        .map(|k| {
                            let v = held.get(&k).cloned();
                            (k, v)
                        })
                        .collect()
                };
                if tx.send(FromPeer::Data { id, values }).is_err() {
                    break;
                }
            }
        });
    }
}

/// Fetches one result from the first of `addrs` that has it.
pub async fn fetch(addrs: &[String], token: &str, key: &str) -> Result<Bytes, String> {
    let mut last = format!("no worker holds {key}");
    for addr in addrs {
        match fetch_from(addr, token, key).await {
            Ok(Some(b)) => return Ok(b),
            Ok(None) => last = format!("worker {addr} no longer holds {key}"),
            Err(e) => last = format!("cannot fetch {key} from worker {addr}: {e}"),
        }
    }
    Err(last)
}

async fn fetch_from(addr: &str, token: &str, key: &str) -> Result<Option<Bytes>, String> {
    let hello = Hello {
        version: PROTOCOL_VERSION,
        token: token.to_string(),
        role: Role::Peer,
    };
    let (_, tx, mut rx) = connection::connect::<FromPeer, ToPeer>(addr, hello)
        .await
        .map_err(|e| e.to_string())?;
    tx.send(ToPeer::Fetch {
        id: 1,
        keys: vec![key.to_string()],
    })
    .map_err(|_| "connection closed".to_string())?;
    match rx.recv().await.map_err(|e| e.to_string())? {
        Some(FromPeer::Data { mut values, .. }) => Ok(values.pop().and_then(|(_, v)| v)),
        None => Err("connection closed".into()),
    }
}
