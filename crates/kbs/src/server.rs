//! The broker's servers: the listeners, the TLS handshake, and the native HTTPS API; the
//! Gramine secret-provisioning port is served by `gramine.rs`. What a peer receives is decided
//! by the [`KeyBroker`].

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

use teeserve_ratls::key_release::{encode_proof_header, LOG_PROOF_HEADER};

use crate::audit::AuditRecord;
use crate::broker::{decide_native, Conn, Decision, KeyBroker};
use crate::KbsError;

/// A running key broker.
#[derive(Debug)]
pub struct Kbs {
    native: SocketAddr,
    gramine: Option<SocketAddr>,
    broker: Arc<KeyBroker>,
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
        let broker = Arc::new(KeyBroker::load(config_path)?);
        let loaded = broker.current();
        let native = bind(&loaded.config.listen).await?;
        let gramine = match &loaded.config.gramine_listen {
            Some(a) => Some(bind(a).await?),
            None => None,
        };
        let limits = loaded.config.limits.clone();
        drop(loaded);
        let native_addr = native.local_addr().map_err(|e| KbsError::Io {
            what: "local address".into(),
            source: e,
        })?;
        let gramine_addr = gramine.as_ref().and_then(|g| g.local_addr().ok());
        let permits = Arc::new(Semaphore::new(limits.max_connections));
        let mut tasks = vec![
            tokio::spawn(accept_loop(
                native,
                broker.clone(),
                permits.clone(),
                Port::Native,
            )),
            tokio::spawn(summarise_refusals(broker.clone())),
        ];
        if let Some(g) = gramine {
            tasks.push(tokio::spawn(accept_loop(
                g,
                broker.clone(),
                permits,
                Port::Gramine,
            )));
        }
        Ok(Self {
            native: native_addr,
            gramine: gramine_addr,
            broker,
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
        self.broker.reload()
    }

    /// The key broker behind the ports.
    pub fn broker(&self) -> Arc<KeyBroker> {
        self.broker.clone()
    }

    /// Stops answering and logs the stop (see [`KeyBroker::stop`]).
    pub fn stop(&self) -> std::io::Result<()> {
        for t in &self.tasks {
            t.abort();
        }
        self.broker.stop()
    }
}

/// Writes the refusal summary lines every `audit_summary_secs` (read anew each time, so a
/// reload changes it).
async fn summarise_refusals(broker: Arc<KeyBroker>) {
    loop {
        let secs = broker.current().config.limits.audit_summary_secs.max(1);
        tokio::time::sleep(Duration::from_secs(secs)).await;
        let s = broker.clone();
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
    broker: Arc<KeyBroker>,
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
        let broker = broker.clone();
        tokio::spawn(async move {
            let _permit = permit;
            if let Err(e) = serve_conn(tcp, peer, broker, port).await {
                tracing::debug!("{peer}: {e}");
            }
        });
    }
}

async fn serve_conn(
    tcp: TcpStream,
    peer: SocketAddr,
    broker: Arc<KeyBroker>,
    port: Port,
) -> Result<(), String> {
    let loaded = broker.current();
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
    let conn = Arc::new(Conn::new(peer, cert));
    // Verified now, so a peer whose evidence fails learns it on its first request without a
    // second verification; each request still checks that the configuration is the same.
    conn.appraise(&broker).await?;
    match port {
        Port::Gramine => {
            crate::gramine::serve(tls, conn, broker, limits.request_timeout_secs).await
        }
        Port::Native => {
            let svc = hyper::service::service_fn(move |req| {
                let broker = broker.clone();
                let conn = conn.clone();
                async move { Ok::<_, std::convert::Infallible>(handle(req, &broker, &conn).await) }
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
    broker: &KeyBroker,
    conn: &Conn,
) -> Response<Full<Bytes>> {
    if req.method() != hyper::Method::GET {
        return json(
            StatusCode::METHOD_NOT_ALLOWED,
            serde_json::json!({"error": "only GET is supported"}),
        );
    }
    let (loaded, verdict) = match conn.appraise(broker).await {
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
            rec.policy_sha256 = Some(loaded.policy_sha256.clone());
            rec.peer_key_sha256 = conn.key_sha256.clone();
            let proof = match broker.audit_grant(rec).await {
                Ok(p) => p,
                Err(e) => {
                    tracing::error!("audit log: {e}; refusing to release {name:?}");
                    return json(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        serde_json::json!({"error": "the audit log cannot be written"}),
                    );
                }
            };
            let mut r = Response::new(Full::new(Bytes::copy_from_slice(&secret.0)));
            r.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static("application/octet-stream"),
            );
            // The grant's entry and the proof that the signed log holds it, for the TEE to show.
            if let Some(p) = proof {
                match hyper::header::HeaderValue::from_str(&encode_proof_header(&p)) {
                    Ok(v) => {
                        r.headers_mut().insert(LOG_PROOF_HEADER, v);
                    }
                    Err(e) => tracing::error!("log proof header: {e}"),
                }
            }
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
            if !broker.audit_refusal(peer, rec, &loaded.config.limits) {
                return too_many();
            }
            json(StatusCode::FORBIDDEN, refusal.for_peer())
        }
    }
}
