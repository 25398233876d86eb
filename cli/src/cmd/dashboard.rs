//! `dtask dashboard`: a login link to the scheduler's web dashboard.

use super::{Failure, Global, connect};

/// Print a one-time login link to the scheduler's web dashboard, then
/// exit. Opening it in a browser (within 5 minutes, once) starts a session
/// there; programs send `Authorization: Bearer TOKEN` instead.
///
/// The dashboard shows the task stream, progress per function, workers,
/// each task's timings and error, queues, locks, actors and recent
/// failures; `/metrics` serves Prometheus metrics.
#[derive(clap::Args)]
#[command(
    after_help = "Example:\n  xdg-open \"$(dtask dashboard)\"\n\nExit status: 0 printed, 2 the scheduler serves no dashboard (--no-dashboard), 3 cannot reach or authenticate to the scheduler."
)]
pub struct Args {}

pub async fn run(global: &Global, _a: Args) -> Result<(), Failure> {
    let client = connect(global, false).await?;
    let (bound, code) = client.dashboard_login().await?;
    let base = base_url(&bound, client.scheduler_address());
    println!("{base}login?code={code}");
    Ok(())
}

/// The dashboard's URL, from the address it is bound to: a wildcard host
/// (`0.0.0.0`, `::`) is replaced by the host this client reached the
/// scheduler at.
/// The scheme is `https` when this process uses TLS: then so does the
/// scheduler, dashboard included.
pub fn base_url(bound: &str, scheduler: &str) -> String {
    let scheme = match dtask_runtime::tls::current() {
        Ok(Some(_)) => "https",
        _ => "http",
    };
    let Ok(addr) = bound.parse::<std::net::SocketAddr>() else {
        return format!("{scheme}://{bound}/");
    };
    if !addr.ip().is_unspecified() {
        return format!("{scheme}://{addr}/");
    }
    let host = match scheduler.rsplit_once(':') {
        Some((h, _)) => h,
        None => scheduler,
    };
    format!("{scheme}://{host}:{}/", addr.port())
}
