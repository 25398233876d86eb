//! What a command reports when it fails: the message, the exit status,
//! and how client errors map onto both.

use super::*;

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
            ClientError::Connect { .. } | ClientError::Disconnected | ClientError::ShutDown => {
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

pub fn on_timeout(e: ClientError, message: impl FnOnce(Duration) -> String) -> Failure {
    match e {
        ClientError::Timeout(t) => Failure::new(4, message(t)),
        other => other.into(),
    }
}
