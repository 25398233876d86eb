//! Credentials: the client token and the worker token.
//!
//! A scheduler holds two: the **client** token lets a holder act as a
//! client (submit, gather, publish, shut down); the **worker** token lets a
//! holder join as a worker, serve data to peers, and act as a client for
//! the tasks it runs (an unnamed client that cannot shut the cluster down
//! or touch the shell's named keys). A [`Secret`] never shows itself in
//! `Debug` or `Display`, so no log line or panic message can leak one.

use std::sync::Arc;

/// A token. Compared in constant time; shown as `Secret(…)`.
#[derive(Clone)]
pub struct Secret(Arc<str>);

impl Secret {
    /// Wraps a token.
    pub fn new(token: impl Into<String>) -> Self {
        Self(Arc::from(token.into()))
    }

    /// The token itself, for presenting it to a peer.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether `presented` is this token, in time that does not depend on
    /// where they differ.
    pub fn matches(&self, presented: &str) -> bool {
        use subtle::ConstantTimeEq;
        self.0.as_bytes().ct_eq(presented.as_bytes()).into()
    }

    /// A digest of the token: what a worker is told so that it can check
    /// a client's token on its data port without learning the token.
    pub fn digest(&self) -> [u8; 32] {
        digest(self.expose())
    }
}

/// The digest [`Secret::digest`] gives for `token`.
pub fn digest(token: &str) -> [u8; 32] {
    blake3::derive_key("dtask 2026 client token digest", token.as_bytes())
}

/// What a client presents to a worker's data port instead of its token:
/// `digest:` and the hex digest, which the worker checks against the one
/// the scheduler gave it. A worker never learns the client token.
pub fn peer_proof(token: &str) -> String {
    format!("digest:{}", hex::encode(digest(token)))
}

/// The digest in a [`peer_proof`], if `presented` is one.
pub fn proof_digest(presented: &str) -> Option<[u8; 32]> {
    let hex_digest = presented.strip_prefix("digest:")?;
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex_digest, &mut out).ok()?;
    Some(out)
}

/// Whether two digests are equal, in constant time.
pub fn digests_match(a: &[u8; 32], b: &[u8; 32]) -> bool {
    use subtle::ConstantTimeEq;
    a.ct_eq(b).into()
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(…)")
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("…")
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Self {
        Self::new(s)
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Self {
        Self::new(s)
    }
}

/// The two credentials a scheduler checks.
#[derive(Clone, Debug)]
pub struct Credentials {
    /// What clients present.
    pub client: Secret,
    /// What workers present.
    pub worker: Secret,
}

impl Credentials {
    /// Checks that a client presents the client token, explaining a
    /// refusal (a worker credential presented as a client's is named as
    /// such, so the user knows which file to use).
    pub fn admit_client(&self, presented: &str) -> Result<(), String> {
        if self.client.matches(presented) {
            Ok(())
        } else if self.worker.matches(presented) {
            Err(
                "this is a worker credential: it lets a worker join and serve data, \
                 not submit, gather, publish or shut down; use the client token \
                 (DTASK_TOKEN, or the scheduler state directory's `token` file)"
                    .into(),
            )
        } else {
            Err(wrong_token())
        }
    }

    /// Checks that a worker (or a worker's tasks acting as a client)
    /// presents the worker token.
    pub fn admit_worker(&self, presented: &str) -> Result<(), String> {
        if self.worker.matches(presented) {
            Ok(())
        } else if self.client.matches(presented) {
            Err(
                "this is a client credential: workers join with the worker credential \
                 (DTASK_WORKER_TOKEN, or the scheduler state directory's `worker-token` file)"
                    .into(),
            )
        } else {
            Err(wrong_token())
        }
    }
}

/// The refusal for a token that is neither credential.
pub fn wrong_token() -> String {
    "authentication failed: wrong or missing cluster token \
     (set DTASK_TOKEN for clients or DTASK_WORKER_TOKEN for workers, or use the \
     scheduler state directory's `token` / `worker-token` files)"
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_do_not_show_themselves() {
        let s = Secret::new("hunter2-very-secret");
        assert!(!format!("{s:?}").contains("hunter2"));
        assert!(!format!("{s}").contains("hunter2"));
        let c = Credentials {
            client: "client-tok".into(),
            worker: "worker-tok".into(),
        };
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("client-tok") && !shown.contains("worker-tok"),
            "{shown}"
        );
    }

    #[test]
    fn each_credential_admits_its_own_role_only() {
        let c = Credentials {
            client: "c".into(),
            worker: "w".into(),
        };
        assert!(c.admit_client("c").is_ok());
        assert!(c.admit_worker("w").is_ok());
        let e = c.admit_client("w").unwrap_err();
        assert!(e.contains("this is a worker credential"), "{e}");
        let e = c.admit_worker("c").unwrap_err();
        assert!(e.contains("this is a client credential"), "{e}");
        assert!(
            c.admit_client("x")
                .unwrap_err()
                .contains("authentication failed")
        );
        assert!(
            c.admit_worker("")
                .unwrap_err()
                .contains("authentication failed")
        );
    }

    #[test]
    fn a_peer_proof_carries_the_digest_not_the_token() {
        let proof = peer_proof("the-client-token");
        assert!(!proof.contains("the-client-token"));
        assert!(digests_match(
            &proof_digest(&proof).unwrap(),
            &digest("the-client-token")
        ));
        assert!(proof_digest("the-client-token").is_none());
        assert!(proof_digest("digest:zz").is_none());
    }

    #[test]
    fn digests_tell_tokens_apart() {
        let s = Secret::new("abc");
        assert!(digests_match(&s.digest(), &digest("abc")));
        assert!(!digests_match(&s.digest(), &digest("abd")));
    }
}
