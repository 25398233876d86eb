//! The SDK's error type.

use std::fmt;

use crate::bindings::dtask::task::types as wit;

/// Why a dtask call failed.
///
/// Every fallible call in the SDK returns [`Result`]. `Error` converts into
/// `String`, so `?` also works in task exports that return
/// `Result<T, String>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The call's timeout passed before it could complete.
    Timeout,
    /// A task that was waited for failed.
    TaskFailed {
        /// The key that was waited for.
        key: String,
        /// Broad class of failure: `panic`, `trap`, `timeout`, `memory`, …
        kind: String,
        /// One line saying what happened, naming the key where it started.
        message: String,
    },
    /// A future that was waited for was cancelled; holds its key.
    Cancelled(String),
    /// The actor called is gone: its worker died or it was deleted. Holds
    /// the host's message, which names the actor.
    ActorLost(String),
    /// Anything else the host reported (a bad argument, an unknown key, a
    /// lease not held, the scheduler gone), or a value that could not be
    /// encoded.
    Other(String),
    /// A value did not decode as the requested type.
    Decode(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Timeout => f.write_str("timed out"),
            Error::TaskFailed { key, kind, message } => {
                write!(f, "{key} failed ({kind}): {message}")
            }
            Error::Cancelled(key) => write!(f, "{key} was cancelled"),
            Error::ActorLost(message) | Error::Other(message) => f.write_str(message),
            Error::Decode(message) => write!(f, "cannot decode the value: {message}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<Error> for String {
    fn from(error: Error) -> String {
        error.to_string()
    }
}

impl From<wit::Error> for Error {
    fn from(error: wit::Error) -> Error {
        match error {
            wit::Error::Timeout => Error::Timeout,
            wit::Error::TaskFailed(failure) => Error::TaskFailed {
                key: failure.key,
                kind: failure.kind,
                message: failure.message,
            },
            wit::Error::Cancelled(key) => Error::Cancelled(key),
            wit::Error::ActorLost(message) => Error::ActorLost(message),
            wit::Error::Other(message) => Error::Other(message),
        }
    }
}

/// The result of a dtask call.
pub type Result<T> = std::result::Result<T, Error>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn displays_each_case() {
        assert_eq!(Error::Timeout.to_string(), "timed out");
        let failed = Error::TaskFailed {
            key: "fib-1".into(),
            kind: "panic".into(),
            message: "fib-2 panicked: boom".into(),
        };
        assert_eq!(
            failed.to_string(),
            "fib-1 failed (panic): fib-2 panicked: boom"
        );
        assert_eq!(Error::Cancelled("k".into()).to_string(), "k was cancelled");
        assert_eq!(
            Error::Other("no such queue".into()).to_string(),
            "no such queue"
        );
        assert!(Error::Decode("x".into()).to_string().contains("decode"));
        assert_eq!(
            Error::ActorLost("actor counter-1 is lost: its worker died".into()).to_string(),
            "actor counter-1 is lost: its worker died"
        );
    }

    #[test]
    fn question_mark_works_with_string_errors() {
        fn export() -> std::result::Result<u32, String> {
            Err(Error::Timeout)?;
            Ok(1)
        }
        assert_eq!(export(), Err("timed out".to_string()));
    }

    #[test]
    fn converts_host_errors() {
        let host = wit::Error::TaskFailed(wit::TaskFailure {
            key: "a".into(),
            kind: "trap".into(),
            message: "m".into(),
        });
        assert_eq!(
            Error::from(host),
            Error::TaskFailed {
                key: "a".into(),
                kind: "trap".into(),
                message: "m".into()
            }
        );
        assert_eq!(Error::from(wit::Error::Timeout), Error::Timeout);
        assert_eq!(
            Error::from(wit::Error::Cancelled("k".into())),
            Error::Cancelled("k".into())
        );
        assert_eq!(
            Error::from(wit::Error::ActorLost("actor a was deleted".into())),
            Error::ActorLost("actor a was deleted".into())
        );
        assert_eq!(
            Error::from(wit::Error::Other("no such queue".into())),
            Error::Other("no such queue".into())
        );
    }
}
