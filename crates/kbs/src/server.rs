//! The broker's servers: the native HTTPS API and the Gramine secret-provisioning port.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use teeserve_attest::{Policy, Verdict, VerifyError};
use teeserve_ratls::RaTlsError;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

use crate::audit::{AuditLog, AuditRecord};
use crate::config::{Limits, Loaded, Secret};
use crate::throttle::RefusalLimiter;
use crate::KbsError;

/// Why a peer was refused: the rule and the detail.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Refusal {
    /// The policy that decided, when one did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// The rule that failed.
    pub rule: String,
    /// What failed it.
    pub detail: String,
}

/// Shared broker state; swapped whole on reload.
#[derive(Debug)]
pub struct State {
    loaded: RwLock<Arc<Loaded>>,
    audit: RwLock<Arc<AuditLog>>,
    limiter: RefusalLimiter,
    config_path: PathBuf,
}

impl State {
    /// The current configuration.
    pub fn current(&self) -> Arc<Loaded> {
        self.loaded
            .read()
            .map(|g| g.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    fn audit(&self) -> Arc<AuditLog> {
        self.audit
            .read()
            .map(|g| g.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    /// Writes a grant's audit line and syncs it, off the async threads. An error means the
    /// secret must not be sent.
    pub(crate) async fn audit_grant(&self, r: AuditRecord) -> std::io::Result<()> {
        let audit = self.audit();
        tokio::task::spawn_blocking(move || audit.record(&r))
            .await
            .map_err(std::io::Error::other)?
    }

    /// Records a refusal of `peer` (aggregated, see [`AuditLog::refusal`]); returns false when
    /// the peer is over its rate of refusals and should be told to slow down.
    pub(crate) fn audit_refusal(&self, peer: SocketAddr, r: AuditRecord, limits: &Limits) -> bool {
        let allowed = self
            .limiter
            .allow(peer.ip(), limits.refusals_per_sec, Instant::now());
        if let Err(e) = self.audit().refusal(peer.ip(), r, !allowed) {
            tracing::error!("audit log: {e}");
        }
        allowed
    }

    /// Writes the summary lines of refusals counted since the last summary.
    pub fn flush_refusals(&self) -> std::io::Result<()> {
        self.audit().flush_refusals()
    }

    /// Re-reads the configuration; a broken one is rejected and the old one stays.
    pub fn reload(&self) -> Result<(), KbsError> {
        let new = Loaded::load(&self.config_path)?;
        let audit = AuditLog::open(new.config.audit_log.as_deref()).map_err(|e| KbsError::Io {
            what: "opening the audit log".into(),
            source: e,
        })?;
        if let Ok(mut g) = self.audit.write() {
            *g = Arc::new(audit);
        }
        if let Ok(mut g) = self.loaded.write() {
            *g = Arc::new(new);
        }
        Ok(())
    }
}

/// Maps a verification failure to the rule it breaks.
pub fn refusal_of(e: &RaTlsError) -> Refusal {
    let rule = match e {
        RaTlsError::Certificate(_) => "ratls_certificate",
        RaTlsError::Binding(_) => "ratls_binding",
        RaTlsError::Verify(VerifyError::Expired { .. } | VerifyError::NotYetValid { .. }) => {
            "collateral_validity"
        }
        RaTlsError::Verify(VerifyError::Revoked { .. }) => "revocation",
        RaTlsError::Verify(VerifyError::UntrustedRoot { .. }) => "root",
        RaTlsError::Verify(VerifyError::TcbRevoked(_)) => "tcb_status",
        RaTlsError::Verify(_) => "evidence",
        RaTlsError::Collateral(_) => "collateral",
        RaTlsError::Policy(p) => {
            return Refusal {
                policy: Some(p.policy.clone()),
                rule: p.rule.into(),
                detail: p.detail.clone(),
            }
        }
        RaTlsError::Platform(_) | RaTlsError::Generate(_) => "evidence",
    };
    Refusal {
        policy: None,
        rule: rule.into(),
        detail: e.to_string(),
    }
}

/// Decides whether a peer with this verdict gets `secret`, using the policies that name it
/// (`gramine` selects the policies' `gramine_secret` instead).
pub fn decide<'a>(
    loaded: &'a Loaded,
    verdict: &Verdict,
    secret: Option<&str>,
) -> Result<(&'a Policy, String, Secret), Refusal> {
    let mut first_refusal = None;
    for p in &loaded.config.policies {
        let name = match secret {
            Some(s) if p.secrets.iter().any(|x| x == s) => s.to_owned(),
            None => match &p.gramine_secret {
                Some(g) => g.clone(),
                None => continue,
            },
            _ => continue,
        };
        match p.appraise(verdict) {
            Ok(()) => {
                if let Some(sec) = loaded.secrets.get(&name) {
                    return Ok((p, name, sec.clone()));
                }
            }
            Err(e) => {
                first_refusal.get_or_insert(Refusal {
                    policy: Some(e.policy.clone()),
                    rule: e.rule.into(),
                    detail: e.detail.clone(),
                });
            }
        }
    }
    Err(first_refusal.unwrap_or(Refusal {
        policy: None,
        rule: "secrets".into(),
        detail: match secret {
            Some(s) => format!("no policy lists secret {s:?}"),
            None => "no policy sets gramine_secret".into(),
        },
    }))
}

/// Rules whose policy detail names the policy's expected measurements. A refused peer is told
/// the rule, not the values that would have admitted it (the audit log keeps them).
const MEASUREMENT_RULES: &[&str] = &[
    "mrenclave",
    "mrsigner",
    "isv_prod_id",
    "min_isv_svn",
    "mrtd",
    "rtmr",
    "mrconfigid",
];

impl Refusal {
    /// What the refused peer is told: the rule and policy, and the detail unless it would echo
    /// the policy's measurements.
    pub fn for_peer(&self) -> serde_json::Value {
        let detail = if MEASUREMENT_RULES.contains(&self.rule.as_str()) {
            format!(
                "the evidence does not match the policy's {} (the broker's audit log has the values)",
                self.rule
            )
        } else {
            self.detail.clone()
        };
        serde_json::json!({
            "error": "secret refused",
            "policy": self.policy,
            "rule": self.rule,
            "detail": detail,
        })
    }
}

/// How the native API answers a request for a secret.
#[derive(Debug)]
pub enum Decision<'a> {
    /// Release the secret.
    Granted {
        /// The policy that admitted the peer.
        policy: &'a Policy,
        /// The secret.
        secret: Secret,
    },
    /// The peer is admitted by some policy, and the name is not a secret of this broker.
    Unknown,
    /// Refused.
    Refused(Refusal),
}

/// Decides a native-API request for `name`. A peer that no policy admits gets the same refusal
/// whatever name it asks for, so it cannot learn which secrets exist; a peer that some policy
/// admits (the owner's own TEE) is told which rule refused this name, or that it is unknown.
pub fn decide_native<'a>(
    loaded: &'a Loaded,
    verdict: &Result<Verdict, Refusal>,
    name: &str,
) -> Decision<'a> {
    let v = match verdict {
        Ok(v) => v,
        Err(r) => return Decision::Refused(r.clone()),
    };
    let refusal = match decide(loaded, v, Some(name)) {
        Ok((policy, _, secret)) => return Decision::Granted { policy, secret },
        Err(r) => r,
    };
    let mut first = None;
    for p in &loaded.config.policies {
        match p.appraise(v) {
            Ok(()) if loaded.secrets.contains_key(name) => return Decision::Refused(refusal),
            Ok(()) => return Decision::Unknown,
            Err(e) => {
                first.get_or_insert(Refusal {
                    policy: Some(e.policy.clone()),
                    rule: e.rule.into(),
                    detail: e.detail.clone(),
                });
            }
        }
    }
    Decision::Refused(first.unwrap_or(Refusal {
        policy: None,
        rule: "secrets".into(),
        detail: "no policy is configured".into(),
    }))
}

/// A running key broker.
#[derive(Debug)]
pub struct Kbs {
    native: SocketAddr,
    gramine: Option<SocketAddr>,
    state: Arc<State>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Kbs {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

async fn bind(addr: &str) -> Result<TcpListener, KbsError> {
    TcpListener::bind(addr).await.map_err(|e| KbsError::Io {
        what: format!("cannot listen on {addr}"),
        source: e,
    })
}

impl Kbs {
    /// Loads the configuration, binds the ports and starts serving.
    pub async fn start(config_path: &Path) -> Result<Self, KbsError> {
        let loaded = Loaded::load(config_path)?;
        let audit =
            AuditLog::open(loaded.config.audit_log.as_deref()).map_err(|e| KbsError::Io {
                what: "opening the audit log".into(),
                source: e,
            })?;
        let native = bind(&loaded.config.listen).await?;
        let gramine = match &loaded.config.gramine_listen {
            Some(a) => Some(bind(a).await?),
            None => None,
        };
        let limits = loaded.config.limits.clone();
        let state = Arc::new(State {
            loaded: RwLock::new(Arc::new(loaded)),
            audit: RwLock::new(Arc::new(audit)),
            limiter: RefusalLimiter::new(),
            config_path: config_path.to_owned(),
        });
        let native_addr = native.local_addr().map_err(|e| KbsError::Io {
            what: "local address".into(),
            source: e,
        })?;
        let gramine_addr = gramine.as_ref().and_then(|g| g.local_addr().ok());
        let permits = Arc::new(Semaphore::new(limits.max_connections));
        let mut tasks = vec![
            tokio::spawn(accept_loop(
                native,
                state.clone(),
                permits.clone(),
                Port::Native,
            )),
            tokio::spawn(summarise_refusals(state.clone())),
        ];
        if let Some(g) = gramine {
            tasks.push(tokio::spawn(accept_loop(
                g,
                state.clone(),
                permits,
                Port::Gramine,
            )));
        }
        Ok(Self {
            native: native_addr,
            gramine: gramine_addr,
            state,
            tasks,
        })
    }

    /// The native API's address.
    pub fn native_addr(&self) -> SocketAddr {
        self.native
    }

    /// The Gramine port's address.
    pub fn gramine_addr(&self) -> Option<SocketAddr> {
        self.gramine
    }

    /// Re-reads the configuration (what SIGHUP does).
    pub fn reload(&self) -> Result<(), KbsError> {
        self.state.reload()
    }

    /// The shared state.
    pub fn state(&self) -> Arc<State> {
        self.state.clone()
    }
}

/// Writes the refusal summary lines every `audit_summary_secs` (read anew each time, so a
/// reload changes it).
async fn summarise_refusals(state: Arc<State>) {
    loop {
        let secs = state.current().config.limits.audit_summary_secs.max(1);
        tokio::time::sleep(Duration::from_secs(secs)).await;
        let s = state.clone();
        match tokio::task::spawn_blocking(move || s.flush_refusals()).await {
            Ok(Err(e)) => tracing::error!("audit log: {e}"),
            Err(e) => tracing::error!("audit log: {e}"),
            Ok(Ok(())) => {}
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Port {
    Native,
    Gramine,
}

async fn accept_loop(
    listener: TcpListener,
    state: Arc<State>,
    permits: Arc<Semaphore>,
    port: Port,
) {
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!("accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tracing::warn!("{peer}: connection limit reached; closing");
            continue;
        };
        let state = state.clone();
        tokio::spawn(async move {
            let _permit = permit;
            if let Err(e) = serve_conn(tcp, peer, state, port).await {
                tracing::debug!("{peer}: {e}");
            }
        });
    }
}

/// A verdict is re-checked after this long even when the configuration did not change, so a
/// long keep-alive connection does not outlive its collateral's validity by much.
const VERDICT_TTL: Duration = Duration::from_secs(60);

#[derive(Debug)]
struct Appraisal {
    /// The configuration the verdict was made under.
    loaded: Arc<Loaded>,
    verdict: Arc<Result<Verdict, Refusal>>,
    made: Instant,
}

/// One connection: its peer, the certificate it presented, and the latest appraisal of it.
#[derive(Debug)]
pub(crate) struct Conn {
    pub(crate) peer: SocketAddr,
    cert: Arc<Vec<u8>>,
    appraisal: tokio::sync::Mutex<Option<Appraisal>>,
}

impl Conn {
    /// The configuration in force now and this peer's verdict under it. The certificate is
    /// verified again when the configuration changed since the last request (a reload may
    /// change the root, the collateral or the policies) or the verdict is old.
    pub(crate) async fn appraise(
        &self,
        state: &State,
    ) -> Result<(Arc<Loaded>, Arc<Result<Verdict, Refusal>>), String> {
        let loaded = state.current();
        let mut guard = self.appraisal.lock().await;
        if let Some(a) = guard.as_ref() {
            if Arc::ptr_eq(&a.loaded, &loaded) && a.made.elapsed() < VERDICT_TTL {
                return Ok((loaded, a.verdict.clone()));
            }
        }
        let appraiser = loaded.appraiser.clone();
        let cert = self.cert.clone();
        let verdict: Result<Verdict, RaTlsError> = tokio::task::spawn_blocking(move || {
            appraiser.verify_cert(&cert, time::OffsetDateTime::now_utc().unix_timestamp())
        })
        .await
        .map_err(|e| e.to_string())?;
        let verdict = Arc::new(verdict.map_err(|e| refusal_of(&e)));
        *guard = Some(Appraisal {
            loaded: loaded.clone(),
            verdict: verdict.clone(),
            made: Instant::now(),
        });
        Ok((loaded, verdict))
    }
}

async fn serve_conn(
    tcp: TcpStream,
    peer: SocketAddr,
    state: Arc<State>,
    port: Port,
) -> Result<(), String> {
    let loaded = state.current();
    let limits = loaded.config.limits.clone();
    let _ = tcp.set_nodelay(true);
    let tls = tokio::time::timeout(
        Duration::from_secs(limits.handshake_timeout_secs),
        TlsAcceptor::from(loaded.tls.clone()).accept(tcp),
    )
    .await
    .map_err(|_| "TLS handshake timed out".to_owned())?
    .map_err(|e| format!("TLS handshake: {e}"))?;
    let cert = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.to_vec())
        .ok_or("no client certificate")?;
    drop(loaded);
    let conn = Arc::new(Conn {
        peer,
        cert: Arc::new(cert),
        appraisal: tokio::sync::Mutex::new(None),
    });
    // Verified now, so a peer whose evidence fails learns it on its first request without a
    // second verification; each request still checks that the configuration is the same.
    conn.appraise(&state).await?;
    match port {
        Port::Gramine => crate::gramine::serve(tls, conn, state, limits.request_timeout_secs).await,
        Port::Native => {
            let svc = hyper::service::service_fn(move |req| {
                let state = state.clone();
                let conn = conn.clone();
                async move { Ok::<_, std::convert::Infallible>(handle(req, &state, &conn).await) }
            });
            hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(limits.request_timeout_secs))
                .max_buf_size(16 * 1024)
                .serve_connection(TokioIo::new(tls), svc)
                .await
                .map_err(|e| e.to_string())
        }
    }
}

fn json(status: StatusCode, v: serde_json::Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(v.to_string() + "\n")));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

fn too_many() -> Response<Full<Bytes>> {
    let mut r = json(
        StatusCode::TOO_MANY_REQUESTS,
        serde_json::json!({"error": "too many refused requests from this address; slow down"}),
    );
    r.headers_mut().insert(
        hyper::header::RETRY_AFTER,
        hyper::header::HeaderValue::from_static("1"),
    );
    r
}

async fn handle(
    req: Request<hyper::body::Incoming>,
    state: &State,
    conn: &Conn,
) -> Response<Full<Bytes>> {
    if req.method() != hyper::Method::GET {
        return json(
            StatusCode::METHOD_NOT_ALLOWED,
            serde_json::json!({"error": "only GET is supported"}),
        );
    }
    let (loaded, verdict) = match conn.appraise(state).await {
        Ok(x) => x,
        Err(e) => {
            tracing::error!("{}: appraisal: {e}", conn.peer);
            return json(
                StatusCode::INTERNAL_SERVER_ERROR,
                serde_json::json!({"error": "the evidence could not be appraised"}),
            );
        }
    };
    let path = req.uri().path();
    if path == "/v1/verdict" {
        return match verdict.as_ref() {
            Ok(v) => json(StatusCode::OK, serde_json::to_value(v).unwrap_or_default()),
            Err(r) => json(
                StatusCode::FORBIDDEN,
                serde_json::json!({"error": "evidence not verified", "rule": r.rule, "detail": r.detail}),
            ),
        };
    }
    let Some(name) = path
        .strip_prefix("/v1/secrets/")
        .filter(|n| !n.is_empty() && !n.contains('/'))
    else {
        return json(
            StatusCode::NOT_FOUND,
            serde_json::json!({"error": format!("no such endpoint {path}")}),
        );
    };
    let peer = conn.peer;
    let mut rec = AuditRecord::new(&peer.to_string(), "native", verdict.as_ref().as_ref().ok());
    rec.secret = Some(name.to_owned());
    match decide_native(&loaded, &verdict, name) {
        Decision::Granted { policy, secret } => {
            rec.decision = "granted";
            rec.policy = Some(policy.name.clone());
            if let Err(e) = state.audit_grant(rec).await {
                tracing::error!("audit log: {e}; refusing to release {name:?}");
                return json(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    serde_json::json!({"error": "the audit log cannot be written"}),
                );
            }
            let mut r = Response::new(Full::new(Bytes::copy_from_slice(&secret.0)));
            r.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static("application/octet-stream"),
            );
            r
        }
        Decision::Unknown => json(
            StatusCode::NOT_FOUND,
            serde_json::json!({"error": format!("unknown secret {name:?}")}),
        ),
        Decision::Refused(refusal) => {
            rec.policy = refusal.policy.clone();
            rec.rule = Some(refusal.rule.clone());
            rec.detail = Some(refusal.detail.clone());
            if !state.audit_refusal(peer, rec, &loaded.config.limits) {
                return too_many();
            }
            json(StatusCode::FORBIDDEN, refusal.for_peer())
        }
    }
}
