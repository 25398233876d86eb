//! TLS on every connection: client↔scheduler, worker↔scheduler, worker
//! data ports and the dashboard.
//!
//! A process reads three PEM files: the cluster's CA (`DTASK_TLS_CA`),
//! which it trusts, and its own certificate and key (`DTASK_TLS_CERT`,
//! `DTASK_TLS_KEY`), which it presents. The same keys under `[tls]` in
//! `dtask.toml` (`ca`, `cert`, `key`) and the CLI's `--tls-*` flags set
//! them too. With a CA, every connection this process opens is TLS and
//! checks the peer's certificate against it (and the name it dialled);
//! with a certificate and key, every listener it runs (scheduler, data
//! port, dashboard) speaks TLS only. Clients need only the CA; schedulers
//! and workers need all three. A process that presents a certificate when
//! it connects is checked against the CA as well; one that presents none
//! is admitted on its token alone. With nothing configured, connections
//! are plaintext, as suits a loopback cluster.
//!
//! `dtask cert init DIR --host NAME…` ([`init`]) makes a CA and a
//! certificate for those names. One crypto provider serves the whole
//! process: rustls on `ring`.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

/// Where a process's TLS files are. All unset: plaintext.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// The CA certificate(s) to trust, PEM.
    pub ca: Option<PathBuf>,
    /// This process's certificate chain, PEM.
    pub cert: Option<PathBuf>,
    /// This process's private key, PEM.
    pub key: Option<PathBuf>,
}

impl TlsFiles {
    /// From `DTASK_TLS_CA`, `DTASK_TLS_CERT` and `DTASK_TLS_KEY`, else
    /// `[tls]` in the config file.
    pub fn from_env() -> Result<Self, String> {
        let var = |name: &str| {
            std::env::var_os(name)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        let env = Self {
            ca: var("DTASK_TLS_CA"),
            cert: var("DTASK_TLS_CERT"),
            key: var("DTASK_TLS_KEY"),
        };
        let file = crate::config::file_config()?
            .map(|(_, c)| c.tls)
            .unwrap_or_default();
        Ok(Self {
            ca: env.ca.or(file.ca),
            cert: env.cert.or(file.cert),
            key: env.key.or(file.key),
        })
    }

    /// Whether nothing is set.
    pub fn is_empty(&self) -> bool {
        self.ca.is_none() && self.cert.is_none() && self.key.is_none()
    }
}

/// A process's TLS: how it connects and, with a certificate, how it
/// accepts.
pub struct Tls {
    connector: tokio_rustls::TlsConnector,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("serves", &self.acceptor.is_some())
            .finish_non_exhaustive()
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read_certs(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("cannot read the {what} {}: {e}", path.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("the {what} {} is not PEM: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "the {what} {} holds no certificate",
            path.display()
        ));
    }
    Ok(certs)
}

impl Tls {
    /// Loads the files. `Ok(None)`: none are set (plaintext).
    pub fn load(files: &TlsFiles) -> Result<Option<Self>, String> {
        if files.is_empty() {
            return Ok(None);
        }
        let Some(ca) = &files.ca else {
            return Err(
                "TLS needs the cluster's CA: set DTASK_TLS_CA (or `ca` under [tls] \
                        in dtask.toml, or --tls-ca) beside the certificate and key"
                    .into(),
            );
        };
        let mut roots = rustls::RootCertStore::empty();
        for cert in read_certs(ca, "CA file")? {
            roots
                .add(cert)
                .map_err(|e| format!("the CA file {} is not a usable CA: {e}", ca.display()))?;
        }
        let roots = Arc::new(roots);
        let identity = match (&files.cert, &files.key) {
            (Some(cert), Some(key)) => {
                let chain = read_certs(cert, "certificate file")?;
                let key = PrivateKeyDer::from_pem_file(key)
                    .map_err(|e| format!("cannot read the private key {}: {e}", key.display()))?;
                Some((chain, key))
            }
            (None, None) => None,
            _ => {
                return Err("DTASK_TLS_CERT and DTASK_TLS_KEY go together: set both (a \
                            scheduler or worker needs them), or neither (a client)"
                    .into());
            }
        };
        let versions = rustls::DEFAULT_VERSIONS;
        let client = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(versions)
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots.clone());
        let client = match &identity {
            Some((chain, key)) => client
                .with_client_auth_cert(chain.clone(), key.clone_key())
                .map_err(|e| format!("the certificate and key do not go together: {e}"))?,
            None => client.with_no_client_auth(),
        };
        let acceptor = match identity {
            Some((chain, key)) => {
                let verifier =
                    rustls::server::WebPkiClientVerifier::builder_with_provider(roots, provider())
                        .allow_unauthenticated()
                        .build()
                        .map_err(|e| e.to_string())?;
                let server = rustls::ServerConfig::builder_with_provider(provider())
                    .with_protocol_versions(versions)
                    .map_err(|e| e.to_string())?
                    .with_client_cert_verifier(verifier)
                    .with_single_cert(chain, key)
                    .map_err(|e| format!("the certificate and key do not go together: {e}"))?;
                Some(tokio_rustls::TlsAcceptor::from(Arc::new(server)))
            }
            None => None,
        };
        Ok(Some(Self {
            connector: tokio_rustls::TlsConnector::from(Arc::new(client)),
            acceptor,
        }))
    }

    /// The acceptor for this process's listeners, if it has a certificate.
    pub fn acceptor(&self) -> Option<&tokio_rustls::TlsAcceptor> {
        self.acceptor.as_ref()
    }

    /// Runs the TLS handshake over `stream` to `addr` (`host:port`),
    /// checking the peer's certificate for `host`.
    ///
    /// A failure TLS itself reports (a certificate, an alert) is final:
    /// [`TlsError::Refused`]; a connection that merely ends during the
    /// handshake (a peer restarting, say) may be worth another try:
    /// [`TlsError::Io`]. Both say what they mean for a user.
    pub async fn connect(
        &self,
        addr: &str,
        stream: tokio::net::TcpStream,
    ) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, TlsError> {
        let host = host_of(addr);
        let name = ServerName::try_from(host.to_string()).map_err(|_| {
            TlsError::Refused(format!(
                "{host:?} is not a host name or address TLS can check"
            ))
        })?;
        self.connector.connect(name, stream).await.map_err(|e| {
            let said = explain(&e, addr, true);
            match rustls_error(&e) {
                Some(_) => TlsError::Refused(said),
                None => TlsError::Io(std::io::Error::new(e.kind(), said)),
            }
        })
    }
}

/// Why a TLS connection could not be made.
#[derive(Debug)]
pub enum TlsError {
    /// TLS refused it: final.
    Refused(String),
    /// The connection failed during the handshake: perhaps transient.
    Io(std::io::Error),
}

/// What a plaintext dtask listener answers a TLS ClientHello with: a fatal
/// `handshake_failure` alert, so that a TLS client learns at once that
/// there is no TLS here (rather than seeing the connection reset).
pub const NO_TLS_HERE: [u8; 7] = [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x28];

/// The host part of `host:port` or `[v6]:port`.
fn host_of(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    host.trim_start_matches('[').trim_end_matches(']')
}

/// The TLS error an I/O error from a TLS stream carries, if it is one
/// (rather than the connection failing underneath).
pub(crate) fn rustls_error(e: &std::io::Error) -> Option<&rustls::Error> {
    e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>())
}

/// Says what a failed TLS handshake means, for a user.
pub fn explain(e: &std::io::Error, addr: &str, dialled: bool) -> String {
    use rustls::{CertificateError, Error};
    let tls = rustls_error(e);
    let peer = if dialled { addr } else { "the peer" };
    match tls {
        Some(Error::InvalidCertificate(c)) => match c {
            CertificateError::UnknownIssuer | CertificateError::BadSignature => format!(
                "TLS: the certificate of {peer} is not signed by the CA this side trusts \
                 (DTASK_TLS_CA): unknown issuer, a wrong CA"
            ),
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => format!(
                "TLS: the certificate of {peer} has expired; make a new one with \
                 `dtask cert init`"
            ),
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                format!("TLS: the certificate of {peer} is not valid yet (check the clocks)")
            }
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                format!(
                    "TLS: the certificate of {peer} is not valid for the name {:?}; make one \
                 that is with `dtask cert init DIR --host {}`",
                    host_of(addr),
                    host_of(addr)
                )
            }
            other => format!("TLS: the certificate of {peer} was refused: {other:?}"),
        },
        Some(Error::InvalidMessage(_)) | Some(Error::InappropriateMessage { .. }) => format!(
            "TLS: {peer} does not speak TLS (a plaintext peer): configure TLS on both \
             sides or on neither"
        ),
        Some(Error::AlertReceived(rustls::AlertDescription::HandshakeFailure)) => format!(
            "TLS: {peer} refused the TLS handshake: it does not speak TLS (a plaintext \
             dtask peer answers so; configure TLS on both sides or on neither), or shares \
             no cipher with this side"
        ),
        Some(Error::AlertReceived(alert)) => format!(
            "TLS: {peer} refused the handshake ({alert:?}): does it trust this side's \
             certificate and CA?"
        ),
        Some(other) => format!("TLS handshake with {peer} failed: {other}"),
        None if matches!(
            e.kind(),
            std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset
        ) =>
        {
            format!(
                "TLS: {peer} closed the connection during the TLS handshake: it does not \
                 speak TLS (a plaintext peer), or refused this side"
            )
        }
        None => format!("TLS handshake with {peer} failed: {e}"),
    }
}

static CURRENT: OnceLock<Result<Option<Arc<Tls>>, String>> = OnceLock::new();

/// Sets this process's TLS from `files` (the CLI does, from its flags and
/// the environment, before anything connects). A second call, or one after
/// a connection was made, is refused.
pub fn install(files: &TlsFiles) -> Result<(), String> {
    let tls = Tls::load(files)?.map(Arc::new);
    CURRENT
        .set(Ok(tls))
        .map_err(|_| "TLS was already set up in this process".to_string())
}

/// This process's TLS: what [`install`] set, else what the environment
/// and config file say (read once). `Ok(None)`: plaintext.
pub fn current() -> Result<Option<Arc<Tls>>, String> {
    CURRENT
        .get_or_init(|| Ok(Tls::load(&TlsFiles::from_env()?)?.map(Arc::new)))
        .clone()
}

/// The distinguished name of every CA `init` makes, so that a directory's
/// CA key can issue more certificates later.
fn ca_params() -> Result<rcgen::CertificateParams, String> {
    let mut params =
        rcgen::CertificateParams::new(Vec::<String>::new()).map_err(|e| e.to_string())?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "dtask cluster CA");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    Ok(params)
}

/// What [`init`] wrote.
#[derive(Debug)]
pub struct Made {
    /// Whether the CA was made now (else `DIR`'s was reused).
    pub new_ca: bool,
    /// The files written.
    pub files: Vec<PathBuf>,
}

/// Makes `DIR/ca.pem` (with its key `ca-key.pem`, kept to issue more
/// certificates) unless `DIR` has them, and `DIR/cert.pem` + `DIR/key.pem`
/// for `hosts` (DNS names or IP addresses), valid for `days`. Keys are
/// written 0600.
pub fn init(dir: &Path, hosts: &[String], days: u32) -> Result<Made, String> {
    use rcgen::{CertificateParams, KeyPair, SanType};
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let ca_pem = dir.join("ca.pem");
    let ca_key_pem = dir.join("ca-key.pem");
    let mut files = Vec::new();
    let now = time_now();
    if ca_pem.exists() && !ca_key_pem.exists() {
        return Err(format!(
            "{} exists without its key {}: making a new CA would leave every certificate \
             it signed untrusted; put ca-key.pem back, or choose another directory",
            ca_pem.display(),
            ca_key_pem.display()
        ));
    }
    let (ca_key, new_ca) = if ca_pem.exists() && ca_key_pem.exists() {
        let text = std::fs::read_to_string(&ca_key_pem)
            .map_err(|e| format!("cannot read {}: {e}", ca_key_pem.display()))?;
        let key = KeyPair::from_pem(&text)
            .map_err(|e| format!("{} is not a private key: {e}", ca_key_pem.display()))?;
        (key, false)
    } else {
        let key = KeyPair::generate().map_err(|e| e.to_string())?;
        let mut params = ca_params()?;
        params.not_before = now;
        params.not_after = now + time_days(3650);
        let cert = params.self_signed(&key).map_err(|e| e.to_string())?;
        write(&ca_pem, cert.pem().as_bytes(), 0o644)?;
        write(&ca_key_pem, key.serialize_pem().as_bytes(), 0o600)?;
        files.push(ca_pem.clone());
        files.push(ca_key_pem.clone());
        (key, true)
    };
    let issuer = rcgen::Issuer::new(ca_params()?, ca_key);
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(|e| e.to_string())?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "dtask");
    for host in hosts {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        params
            .subject_alt_names
            .push(match host.parse::<std::net::IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName(
                    host.to_string()
                        .try_into()
                        .map_err(|e| format!("{host:?} is not a DNS name: {e}"))?,
                ),
            });
    }
    params.not_before = now;
    params.not_after = now + time_days(days);
    params.extended_key_usages = vec![
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    let key = KeyPair::generate().map_err(|e| e.to_string())?;
    let cert = params.signed_by(&key, &issuer).map_err(|e| e.to_string())?;
    let cert_pem = dir.join("cert.pem");
    let key_pem = dir.join("key.pem");
    write(&cert_pem, cert.pem().as_bytes(), 0o644)?;
    write(&key_pem, key.serialize_pem().as_bytes(), 0o600)?;
    files.push(cert_pem);
    files.push(key_pem);
    Ok(Made { new_ca, files })
}

fn time_now() -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc()
}

fn time_days(days: u32) -> time::Duration {
    time::Duration::days(i64::from(days))
}

fn write(path: &Path, bytes: &[u8], mode: u32) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    f.set_permissions(std::fs::Permissions::from_mode(mode))
        .and_then(|()| f.write_all(bytes))
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_come_out_of_addresses() {
        assert_eq!(host_of("10.0.0.1:8786"), "10.0.0.1");
        assert_eq!(host_of("[::1]:8786"), "::1");
        assert_eq!(host_of("sched.example:1"), "sched.example");
    }

    #[test]
    fn init_makes_files_that_load_and_reuses_its_ca() {
        let dir = tempfile::tempdir().unwrap();
        let made = init(dir.path(), &["localhost".into(), "127.0.0.1".into()], 30).unwrap();
        assert!(made.new_ca);
        let files = TlsFiles {
            ca: Some(dir.path().join("ca.pem")),
            cert: Some(dir.path().join("cert.pem")),
            key: Some(dir.path().join("key.pem")),
        };
        assert!(Tls::load(&files).unwrap().unwrap().acceptor().is_some());
        let ca = std::fs::read(dir.path().join("ca.pem")).unwrap();
        let again = init(dir.path(), &["other.example".into()], 30).unwrap();
        assert!(!again.new_ca);
        assert_eq!(std::fs::read(dir.path().join("ca.pem")).unwrap(), ca);
        use std::os::unix::fs::PermissionsExt;
        for key in ["key.pem", "ca-key.pem"] {
            let mode = std::fs::metadata(dir.path().join(key))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{key}");
        }
    }

    #[test]
    fn half_a_configuration_is_refused_saying_what_is_missing() {
        let e = Tls::load(&TlsFiles {
            cert: Some("c.pem".into()),
            key: Some("k.pem".into()),
            ..Default::default()
        })
        .unwrap_err();
        assert!(e.contains("DTASK_TLS_CA"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        init(dir.path(), &["localhost".into()], 1).unwrap();
        let e = Tls::load(&TlsFiles {
            ca: Some(dir.path().join("ca.pem")),
            cert: Some(dir.path().join("cert.pem")),
            key: None,
        })
        .unwrap_err();
        assert!(e.contains("go together"), "{e}");
    }
}
