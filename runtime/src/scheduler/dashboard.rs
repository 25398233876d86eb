//! The scheduler's web dashboard and Prometheus metrics, over HTTP.
//!
//! Pages (`/`, `/task/KEY`, `/primitives`, `/errors`) are one embedded
//! page that polls small JSON endpoints (`/json/…`); `/metrics` is the
//! Prometheus text format; `/health` answers anyone. Everything else needs
//! the cluster token, as `Authorization: Bearer TOKEN` or as the session
//! cookie that a one-time code from `dtask dashboard` sets.
//!
//! Every answer comes from the core loop ([`Ask`] in, [`View`] out), built
//! from summaries the scheduler keeps as it goes and capped lists, so one
//! costs the same with a million tasks as with ten. Nothing here changes
//! the scheduler's state.

use super::state::{Failure, FunctionTally, PrimitivesSummary, Span, TaskDetail, Totals};
use crate::protocol::{Stats, WorkerInfo};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use serde::Serialize;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// What a dashboard request asks the core for.
#[derive(Debug)]
pub(super) enum Ask {
    Counts,
    Status { after: u64 },
    Task(String),
    Errors,
    Primitives,
    Metrics,
}

/// The core's answer to an [`Ask`].
#[derive(Debug)]
pub(super) enum View {
    Counts(Counts),
    Status(Box<StatusView>),
    Task(Option<Box<TaskDetail>>),
    Errors(Vec<Failure>),
    Primitives(Box<PrimitivesSummary>),
    Metrics(Box<MetricsView>),
}

/// A question from the dashboard, with where the answer goes.
#[derive(Debug)]
pub(super) struct Question {
    pub(super) ask: Ask,
    pub(super) reply: oneshot::Sender<View>,
}

/// `/json/counts.json`: for scripts.
#[derive(Clone, Debug, Serialize)]
pub(super) struct Counts {
    /// Tasks known now, by phase.
    pub(super) tasks: super::state::PhaseCounts,
    /// Connected workers.
    pub(super) workers: usize,
    /// Connected clients.
    pub(super) clients: usize,
}

/// `/json/status.json`: what the status page shows.
#[derive(Debug, Serialize)]
pub(super) struct StatusView {
    pub(super) now_ms: u64,
    pub(super) totals: Totals,
    pub(super) clients: usize,
    pub(super) functions: Vec<(Arc<str>, FunctionTally)>,
    pub(super) workers: Vec<WorkerInfo>,
    /// Runs ended since the span the page asked after.
    pub(super) spans: Vec<Span>,
}

/// What `/metrics` reports.
#[derive(Debug)]
pub(super) struct MetricsView {
    pub(super) totals: Totals,
    pub(super) clients: usize,
    pub(super) functions: Vec<(Arc<str>, FunctionTally)>,
    pub(super) workers: Vec<WorkerInfo>,
    pub(super) stats: Stats,
    pub(super) primitives: PrimitivesSummary,
    pub(super) rss_bytes: u64,
    /// (bytes, records, syncs, seconds syncing), with a journal.
    pub(super) journal: Option<(u64, u64, u64, f64)>,
}

/// Functions listed on the status page.
pub(super) const STATUS_FUNCTIONS: usize = 50;
/// Spans sent to the status page per update.
pub(super) const STATUS_SPANS: usize = 2000;
/// Functions reported by `/metrics`.
pub(super) const METRICS_FUNCTIONS: usize = 500;
/// Primitives of each kind listed.
pub(super) const PRIMITIVES: usize = 200;

/// How long a login code from `dtask dashboard` stays good.
const CODE_LIFETIME: Duration = Duration::from_secs(300);
/// Login codes outstanding at once (the oldest go first).
const CODES: usize = 64;
/// Browser sessions kept at once (the oldest go first).
const SESSIONS: usize = 1024;
/// The session cookie's name.
const COOKIE: &str = "dtask_session";

/// Who may see the dashboard: the token's holders, and browsers that
/// redeemed a login code.
pub struct Access {
    token: crate::secret::Secret,
    codes: Mutex<VecDeque<(String, Instant)>>,
    sessions: Mutex<VecDeque<String>>,
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Access").finish_non_exhaustive()
    }
}

fn random_hex() -> String {
    let mut b = [0u8; 24];
    getrandom::fill(&mut b).expect("the system's random source works");
    hex::encode(b)
}

impl Access {
    /// Access for holders of `token`.
    pub fn new(token: crate::secret::Secret) -> Self {
        Self {
            token,
            codes: Mutex::new(VecDeque::new()),
            sessions: Mutex::new(VecDeque::new()),
        }
    }

    /// A new one-time login code.
    pub fn new_code(&self) -> String {
        let code = random_hex();
        let mut codes = self.codes.lock().expect("not poisoned");
        if codes.len() == CODES {
            codes.pop_front();
        }
        codes.push_back((code.clone(), Instant::now()));
        code
    }

    /// Trades a login code for a session, once.
    fn redeem(&self, code: &str) -> Option<String> {
        let mut codes = self.codes.lock().expect("not poisoned");
        let at = codes.iter().position(|(c, _)| eq(c, code))?;
        let (_, made) = codes.remove(at).expect("found");
        if made.elapsed() > CODE_LIFETIME {
            return None;
        }
        drop(codes);
        let session = random_hex();
        let mut sessions = self.sessions.lock().expect("not poisoned");
        if sessions.len() == SESSIONS {
            sessions.pop_front();
        }
        sessions.push_back(session.clone());
        Some(session)
    }

    fn allows(&self, headers: &HeaderMap) -> bool {
        if let Some(t) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
        {
            return self.token.matches(t.trim());
        }
        let Some(session) = headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|c| c.trim().strip_prefix(COOKIE)?.strip_prefix('='))
            .next()
        else {
            return false;
        };
        let sessions = self.sessions.lock().expect("not poisoned");
        sessions.iter().any(|s| eq(s, session))
    }
}

fn eq(a: &str, b: &str) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

#[derive(Clone)]
struct Shared {
    access: Arc<Access>,
    core: mpsc::Sender<super::server::Inbound>,
}

impl Shared {
    async fn ask(&self, ask: Ask) -> Result<View, Response> {
        let (reply, answer) = oneshot::channel();
        let q = Question { ask, reply };
        let gone = || {
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "the scheduler is shutting down\n",
            )
                .into_response()
        };
        self.core
            .send(super::server::Inbound::Dashboard(q))
            .await
            .map_err(|_| gone())?;
        answer.await.map_err(|_| gone())
    }
}

/// Serves the dashboard on `listener` until the core loop is gone.
pub(super) async fn serve(
    listener: tokio::net::TcpListener,
    access: Arc<Access>,
    core: mpsc::Sender<super::server::Inbound>,
) {
    let shared = Shared { access, core };
    let app = axum::Router::new()
        .route("/health", get(|| async { "ok\n" }))
        .route("/login", get(login))
        .route("/app.js", get(script))
        .route("/style.css", get(style))
        .route("/", get(page))
        .route("/errors", get(page))
        .route("/primitives", get(page))
        .route("/task/{*key}", get(page))
        .route("/json/counts.json", get(counts))
        .route("/json/status.json", get(status))
        .route("/json/task.json", get(task))
        .route("/json/errors.json", get(errors))
        .route("/json/primitives.json", get(primitives))
        .route("/metrics", get(metrics))
        .with_state(shared);
    let tls = crate::tls::current()
        .ok()
        .flatten()
        .and_then(|t| t.acceptor().cloned());
    let served = match tls {
        Some(acceptor) => axum::serve(TlsListener::start(listener, acceptor), app).await,
        None => axum::serve(listener, app).await,
    };
    if let Err(e) = served {
        tracing::warn!("the dashboard stopped: {e}");
    }
}

/// The dashboard's listener under TLS: handshakes run on tasks of their
/// own (each bounded in time), so a slow or hostile peer holds up nobody;
/// finished ones queue (boundedly) for the HTTP server.
struct TlsListener {
    ready: mpsc::Receiver<(
        tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
        std::net::SocketAddr,
    )>,
    local: std::net::SocketAddr,
}

impl TlsListener {
    fn start(listener: tokio::net::TcpListener, acceptor: tokio_rustls::TlsAcceptor) -> Self {
        let local = listener
            .local_addr()
            .unwrap_or_else(|_| std::net::SocketAddr::from(([0, 0, 0, 0], 0)));
        let (tx, ready) = mpsc::channel(64);
        let handshakes = Arc::new(tokio::sync::Semaphore::new(64));
        tokio::spawn(async move {
            loop {
                let Ok(permit) = handshakes.clone().acquire_owned().await else {
                    return;
                };
                let (stream, peer) = match listener.accept().await {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::debug!("dashboard accept failed: {e}");
                        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                        continue;
                    }
                };
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    let shake = tokio::time::timeout(
                        std::time::Duration::from_secs(10),
                        acceptor.accept(stream),
                    )
                    .await;
                    drop(permit);
                    match shake {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(
                            "dashboard TLS handshake with {peer} failed: {}",
                            crate::tls::explain(&e, "the peer", false)
                        ),
                        Err(_) => tracing::debug!("dashboard TLS handshake with {peer} timed out"),
                    }
                });
            }
        });
        Self { ready, local }
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(c) => c,
            // The accepting task is gone only with the runtime.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

const INDEX: &str = include_str!("dashboard/index.html");
const SCRIPT: &str = include_str!("dashboard/app.js");
const STYLE: &str = include_str!("dashboard/style.css");
const LOGIN: &str = include_str!("dashboard/login.html");

fn unauthorized(headers: &HeaderMap) -> Response {
    let wants_html = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/html"));
    if wants_html {
        (StatusCode::UNAUTHORIZED, Html(LOGIN)).into_response()
    } else {
        (
            StatusCode::UNAUTHORIZED,
            "the dashboard needs the cluster token: send `Authorization: Bearer TOKEN`, or open \
             the link `dtask dashboard` prints\n",
        )
            .into_response()
    }
}

/// Checks access, then answers with the core's view.
async fn guarded(s: &Shared, headers: &HeaderMap, ask: Ask) -> Response {
    if !s.access.allows(headers) {
        return unauthorized(headers);
    }
    match s.ask(ask).await {
        Ok(v) => v.into_response(),
        Err(r) => r,
    }
}

impl IntoResponse for View {
    fn into_response(self) -> Response {
        match self {
            View::Counts(c) => json(&c),
            View::Status(st) => json(&st),
            View::Task(Some(t)) => json(&t),
            View::Task(None) => (
                StatusCode::NOT_FOUND,
                "no such key: never submitted, or released and forgotten\n",
            )
                .into_response(),
            View::Errors(e) => json(&e),
            View::Primitives(p) => json(&p),
            View::Metrics(m) => (
                [(
                    header::CONTENT_TYPE,
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                )],
                super::metrics::encode_view(&m),
            )
                .into_response(),
        }
    }
}

fn json<T: Serialize>(v: &T) -> Response {
    let mut r = axum::Json(v).into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

async fn page(State(s): State<Shared>, headers: HeaderMap) -> Response {
    if !s.access.allows(&headers) {
        return unauthorized(&headers);
    }
    Html(INDEX).into_response()
}

async fn script() -> Response {
    ([(header::CONTENT_TYPE, "text/javascript")], SCRIPT).into_response()
}

async fn style() -> Response {
    ([(header::CONTENT_TYPE, "text/css")], STYLE).into_response()
}

async fn login(State(s): State<Shared>, Query(q): Query<HashMap<String, String>>) -> Response {
    let Some(session) = q.get("code").and_then(|c| s.access.redeem(c)) else {
        return (StatusCode::UNAUTHORIZED, Html(LOGIN)).into_response();
    };
    // Only a path on this dashboard, never another site.
    let next = q
        .get("next")
        .filter(|n| n.starts_with('/') && !n.starts_with("//"))
        .map_or("/", |n| n.as_str());
    let mut r = Redirect::to(next).into_response();
    let cookie = format!("{COOKIE}={session}; HttpOnly; SameSite=Strict; Path=/; Max-Age=86400");
    r.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&cookie).expect("hex is a valid header"),
    );
    r
}

async fn counts(State(s): State<Shared>, headers: HeaderMap) -> Response {
    guarded(&s, &headers, Ask::Counts).await
}

async fn status(
    State(s): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let after = q.get("after").and_then(|a| a.parse().ok()).unwrap_or(0);
    guarded(&s, &headers, Ask::Status { after }).await
}

async fn task(
    State(s): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let key = q.get("key").cloned().unwrap_or_default();
    guarded(&s, &headers, Ask::Task(key)).await
}

async fn errors(State(s): State<Shared>, headers: HeaderMap) -> Response {
    guarded(&s, &headers, Ask::Errors).await
}

async fn primitives(State(s): State<Shared>, headers: HeaderMap) -> Response {
    guarded(&s, &headers, Ask::Primitives).await
}

async fn metrics(State(s): State<Shared>, headers: HeaderMap) -> Response {
    guarded(&s, &headers, Ask::Metrics).await
}
