//! Listening sockets: TCP or a Unix socket file, accepted alike.

use super::Incoming;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

/// Where connections arrive: a TCP port or a Unix socket.
pub enum Listener {
    /// A TCP port.
    Tcp(tokio::net::TcpListener),
    /// A Unix socket file.
    Unix(tokio::net::UnixListener),
}

impl Listener {
    /// The next connection, the address it came from (for the handshake
    /// gate: a Unix socket's peers are all on this machine, counted as
    /// loopback) and how to name it in a log.
    pub async fn accept(&self) -> std::io::Result<(Incoming, IpAddr, String)> {
        match self {
            Listener::Tcp(l) => {
                let (s, peer) = l.accept().await?;
                Ok((Incoming::Tcp(s), peer.ip(), peer.to_string()))
            }
            Listener::Unix(l) => {
                let (s, _) = l.accept().await?;
                Ok((
                    Incoming::Unix(s),
                    Ipv4Addr::LOCALHOST.into(),
                    "a local Unix socket".into(),
                ))
            }
        }
    }
}

/// How long a socket that answers is watched for its process going away
/// before it is taken to be alive.
const STILL_LISTENING: std::time::Duration = std::time::Duration::from_secs(3);

/// Binds a Unix socket at `path`, replacing the file of one that nothing
/// listens on any more (a process that was killed leaves it behind). The
/// file is made the owner's alone. A live socket (one still answering
/// after [`STILL_LISTENING`]) or a file of another kind is left alone and
/// refused. Blocks while it watches, so call it before serving.
pub fn bind_unix(path: &Path) -> std::io::Result<std::os::unix::net::UnixListener> {
    use std::io::{Error, ErrorKind};
    use std::os::unix::fs::{FileTypeExt as _, PermissionsExt as _};
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(Error::new(
                ErrorKind::AlreadyExists,
                format!(
                    "{} exists and is not a socket; remove it or choose another path",
                    path.display()
                ),
            ));
        }
        // A process just killed keeps its socket until it has finished
        // exiting, which for one holding gigabytes takes a moment: only a
        // socket that stays live is someone else's.
        let live = || std::os::unix::net::UnixStream::connect(path).is_ok();
        let deadline = std::time::Instant::now() + STILL_LISTENING;
        while live() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        if live() {
            return Err(Error::new(
                ErrorKind::AddrInUse,
                format!(
                    "a dtask process already listens on {}; stop it or choose another path",
                    path.display()
                ),
            ));
        }
        std::fs::remove_file(path)?;
    }
    let listener = std::os::unix::net::UnixListener::bind(path).map_err(|e| {
        Error::new(
            e.kind(),
            format!("cannot listen on the Unix socket {}: {e}", path.display()),
        )
    })?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// A Unix socket's file, removed when this is dropped (when whatever
/// listens on it stops).
pub struct SocketFile(pub PathBuf);

impl Drop for SocketFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
