//! The broker's servers: the native HTTPS API and the Gramine secret-provisioning port.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

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
use crate::config::{Loaded, Secret};
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

    pub(crate) fn audit_record(&self, r: &AuditRecord) -> std::io::Result<()> {
        self.audit().record(r)
    }

    fn audit(&self) -> Arc<AuditLog> {
        self.audit
            .read()
            .map(|g| g.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
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
            config_path: config_path.to_owned(),
        });
        let native_addr = native.local_addr().map_err(|e| KbsError::Io {
            what: "local address".into(),
            source: e,
        })?;
        let gramine_addr = gramine.as_ref().and_then(|g| g.local_addr().ok());
        let permits = Arc::new(Semaphore::new(limits.max_connections));
        let mut tasks = vec![tokio::spawn(accept_loop(
            native,
            state.clone(),
            permits.clone(),
            Port::Native,
        ))];
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
    let appraiser = loaded.appraiser.clone();
    let verdict: Result<Verdict, RaTlsError> = tokio::task::spawn_blocking(move || {
        appraiser.verify_cert(&cert, time::OffsetDateTime::now_utc().unix_timestamp())
    })
    .await
    .map_err(|e| e.to_string())?;
    let verdict = Arc::new(verdict.map_err(|e| refusal_of(&e)));
    match port {
        Port::Gramine => {
            crate::gramine::serve(
                tls,
                peer,
                state,
                loaded,
                verdict,
                limits.request_timeout_secs,
            )
            .await
        }
        Port::Native => {
            let svc = hyper::service::service_fn(move |req| {
                let state = state.clone();
                let loaded = loaded.clone();
                let verdict = verdict.clone();
                async move {
                    Ok::<_, std::convert::Infallible>(handle(req, peer, &state, &loaded, &verdict))
                }
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

fn handle(
    req: Request<hyper::body::Incoming>,
    peer: SocketAddr,
    state: &State,
    loaded: &Loaded,
    verdict: &Result<Verdict, Refusal>,
) -> Response<Full<Bytes>> {
    if req.method() != hyper::Method::GET {
        return json(
            StatusCode::METHOD_NOT_ALLOWED,
            serde_json::json!({"error": "only GET is supported"}),
        );
    }
    let path = req.uri().path();
    if path == "/v1/verdict" {
        return match verdict {
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
    if !loaded.secrets.contains_key(name) {
        return json(
            StatusCode::NOT_FOUND,
            serde_json::json!({"error": format!("unknown secret {name:?}")}),
        );
    }
    let mut rec = AuditRecord::new(&peer.to_string(), "native", verdict.as_ref().ok());
    rec.secret = Some(name.to_owned());
    let decision = match verdict {
        Ok(v) => decide(loaded, v, Some(name)),
        Err(r) => Err(r.clone()),
    };
    match decision {
        Ok((policy, _, secret)) => {
            rec.decision = "granted";
            rec.policy = Some(policy.name.clone());
            if let Err(e) = state.audit().record(&rec) {
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
        Err(refusal) => {
            rec.policy = refusal.policy.clone();
            rec.rule = Some(refusal.rule.clone());
            rec.detail = Some(refusal.detail.clone());
            let _ = state.audit().record(&rec);
            json(
                StatusCode::FORBIDDEN,
                serde_json::json!({"error": format!("secret {name:?} refused"), "policy": refusal.policy, "rule": refusal.rule, "detail": refusal.detail}),
            )
        }
    }
}
