//! `dtask cert init`: a CA and a certificate for a cluster's TLS.

use super::Failure;

/// Make TLS files for a cluster (see `DTASK_TLS_CA`, `DTASK_TLS_CERT`,
/// `DTASK_TLS_KEY`).
#[derive(clap::Args)]
#[command(
    after_help = "Example:\n  dtask cert init /etc/dtask/tls --host sched.example --host 10.0.0.5\n  export DTASK_TLS_CA=/etc/dtask/tls/ca.pem DTASK_TLS_CERT=/etc/dtask/tls/cert.pem DTASK_TLS_KEY=/etc/dtask/tls/key.pem\n\nExit status: 0 written, 2 bad input (a name that is neither a DNS name nor an address, a directory that cannot be written)."
)]
pub struct Args {
    #[command(subcommand)]
    what: What,
}

#[derive(clap::Subcommand)]
enum What {
    /// Write DIR/ca.pem (the CA every process trusts, with its key
    /// ca-key.pem, kept to issue more certificates) and DIR/cert.pem +
    /// DIR/key.pem (the certificate schedulers and workers present, valid
    /// for every --host). A DIR that already has a CA keeps it: run again
    /// with more hosts to issue a new cert.pem from the same CA. Keys are
    /// written 0600; give clients only ca.pem.
    #[command(
        after_help = "Example:\n  dtask cert init tls --host localhost --host 127.0.0.1\n\nExit status: 0 written, 2 bad input."
    )]
    Init {
        /// Directory to write the files to (created if missing).
        dir: std::path::PathBuf,
        /// A name or address others dial this cluster's scheduler and
        /// workers at; repeat for each. Default: localhost, 127.0.0.1, ::1
        /// and this machine's host name.
        #[arg(long = "host", value_name = "HOST")]
        hosts: Vec<String>,
        /// Days the certificate is valid for.
        #[arg(long, default_value_t = 365, value_name = "N")]
        days: u32,
    },
}

pub fn run(a: Args) -> Result<(), Failure> {
    let What::Init { dir, hosts, days } = a.what;
    if days == 0 {
        return Err(Failure::usage("--days must be at least 1"));
    }
    let hosts = if hosts.is_empty() {
        let mut h = vec!["localhost".to_string(), "127.0.0.1".into(), "::1".into()];
        let name = dtask_runtime::worker::host_name();
        if name != "localhost" {
            h.push(name);
        }
        h
    } else {
        hosts
    };
    let made = dtask_runtime::tls::init(&dir, &hosts, days).map_err(Failure::usage)?;
    if !made.new_ca {
        eprintln!("dtask: kept the CA already in {}", dir.display());
    }
    for f in made.files {
        println!("{}", f.display());
    }
    Ok(())
}
