//! A local forwarder for clients that cannot pin a TLS key themselves (grpcio, requests): the
//! client speaks plaintext on a Unix socket in a private directory, and every connection it
//! opens there is carried to the server over a new TLS connection made with the caller's
//! configuration, typically [`crate::attested_client_config`]: the attested key, the CA.
//!
//! A server that fails the handshake (another key, another CA) gets nothing: the forwarder
//! answers the local client itself, in its own protocol, with the reason (gRPC `UNAVAILABLE`,
//! or HTTP 502 with an `x-teeserve-refused` header), and closes; the client's next connection
//! tries the server again. A server that cannot be reached is answered the same way, saying so.
//!
//! Who can use it: only the process that started it. The socket's directory (mode 0700) keeps
//! other users out through the file system, and every connection is also checked against the
//! credentials the kernel took when its peer connected (`SO_PEERCRED`): a peer whose user or
//! process is not the forwarder's own is closed before anything reaches the server. So another
//! local user (where the directory's mode does not stop it: root, or a mode widened later) and another process of the same user cannot send requests with this
//! process's client certificate to the attested server, nor reach it as this process. What it
//! does not guard against: anything that runs inside this process, or that can read its memory
//! (root; the same user where ptrace is allowed, see Yama's `ptrace_scope`).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{UnixListener, UnixStream};
use tokio::task::JoinSet;

use crate::transport::connect_tls;

/// How long a connection to the server may take, TLS handshake included.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// The header on the forwarder's own answers (HTTP/1.1): `attestation` when the server's TLS
/// handshake was refused, `unreachable` when no connection to it could be made.
pub const REFUSED_HEADER: &str = "x-teeserve-refused";

/// The protocol the local client speaks, so a refusal reaches it as an answer it understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// gRPC over HTTP/2 (prior knowledge on the socket; ALPN `h2` to the server).
    Grpc,
    /// HTTP/1.1 (ALPN `http/1.1` to the server).
    Http1,
}

/// A running forwarder; dropping it (or [`Forwarder::close`]) stops it, ends the connections
/// it carries, and removes its socket.
#[derive(Debug)]
pub struct Forwarder {
    path: PathBuf,
    dir: Option<tempfile::TempDir>,
    task: Option<tokio::task::JoinHandle<()>>,
    last_error: Arc<Mutex<Option<String>>>,
}

/// The one peer a forwarder carries: its own process, as the kernel reports a Unix socket's
/// peer (`SO_PEERCRED`, taken at `connect`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Owner {
    /// The user the socket's directory belongs to: the one that made it.
    uid: u32,
    /// This process.
    pid: u32,
}

impl Owner {
    /// Whether a peer with these credentials is the owner (`pid`: `None` where the kernel does
    /// not say, which is refused).
    fn admits(&self, uid: u32, pid: Option<i32>) -> bool {
        uid == self.uid && pid.and_then(|p| u32::try_from(p).ok()) == Some(self.pid)
    }
}

/// Where and how the forwarder reaches the server.
#[derive(Debug, Clone)]
pub struct Upstream {
    /// `host:port`.
    pub addr: String,
    /// The name the server's certificate must carry (and SNI).
    pub server_name: String,
    /// The TLS configuration of every connection to the server.
    pub tls: Arc<rustls::ClientConfig>,
}

impl Forwarder {
    /// Starts a forwarder on `runtime`, listening on a Unix socket in a new private directory.
    pub fn start(
        runtime: &tokio::runtime::Handle,
        upstream: Upstream,
        protocol: Protocol,
    ) -> std::io::Result<Self> {
        let dir = {
            use std::os::unix::fs::PermissionsExt;
            tempfile::Builder::new()
                .prefix("teeserve-")
                .permissions(std::fs::Permissions::from_mode(0o700))
                .tempdir()?
        };
        let path = dir.path().join("forward.sock");
        let owner = {
            use std::os::unix::fs::MetadataExt;
            Owner {
                uid: std::fs::metadata(dir.path())?.uid(),
                pid: std::process::id(),
            }
        };
        let listener = {
            let _in_runtime = runtime.enter();
            UnixListener::bind(&path)?
        };
        let last_error = Arc::new(Mutex::new(None));
        let task = runtime.spawn(accept_loop(
            listener,
            owner,
            Arc::new(upstream),
            protocol,
            last_error.clone(),
        ));
        Ok(Self {
            path,
            dir: Some(dir),
            task: Some(task),
            last_error,
        })
    }

    /// The socket to connect to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Why the last connection to the server was refused or failed, if it was.
    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().ok().and_then(|e| e.clone())
    }

    /// True once closed.
    pub fn is_closed(&self) -> bool {
        self.task.is_none()
    }

    /// Stops accepting, ends the connections being carried and removes the socket.
    pub fn close(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
        if let Some(d) = self.dir.take() {
            let _ = d.close();
        }
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.close();
    }
}

async fn accept_loop(
    listener: UnixListener,
    owner: Owner,
    upstream: Arc<Upstream>,
    protocol: Protocol,
    last_error: Arc<Mutex<Option<String>>>,
) {
    // The connections live in this set: aborting the loop drops it, which ends them all.
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((local, _)) = accepted else {
                    // Out of descriptors and the like: wait instead of spinning.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                // Anyone else is closed unanswered: dropping the stream closes it.
                let Ok(peer) = local.peer_cred() else {
                    continue;
                };
                if !owner.admits(peer.uid(), peer.pid()) {
                    continue;
                }
                conns.spawn(carry(local, upstream.clone(), protocol, last_error.clone()));
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

/// Carries one local connection to the server, or answers it with the refusal.
async fn carry(
    mut local: UnixStream,
    upstream: Arc<Upstream>,
    protocol: Protocol,
    last_error: Arc<Mutex<Option<String>>>,
) {
    let connected = tokio::time::timeout(
        CONNECT_TIMEOUT,
        connect_tls(
            &upstream.addr,
            Some(upstream.tls.clone()),
            &upstream.server_name,
        ),
    )
    .await;
    let (why, reason) = match connected {
        Ok(Ok(mut remote)) => {
            // The reason given for a failure is the latest one's.
            if let Ok(mut e) = last_error.lock() {
                *e = None;
            }
            let _ = tokio::io::copy_bidirectional(&mut local, &mut remote).await;
            return;
        }
        // tokio-rustls reports a failed handshake (a refused certificate or key) as
        // InvalidData; anything else happened before TLS.
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::InvalidData => (
            format!("teeserve refused the connection to {}: {e}", upstream.addr),
            "attestation",
        ),
        Ok(Err(e)) => (
            format!("teeserve could not connect to {}: {e}", upstream.addr),
            "unreachable",
        ),
        Err(_) => (
            format!(
                "teeserve could not connect to {} within {} s",
                upstream.addr,
                CONNECT_TIMEOUT.as_secs()
            ),
            "unreachable",
        ),
    };
    if let Ok(mut e) = last_error.lock() {
        *e = Some(why.clone());
    }
    match protocol {
        Protocol::Grpc => refuse_grpc(local, why).await,
        Protocol::Http1 => refuse_http1(local, why, reason).await,
    }
}

/// Answers the local gRPC client's first call with `UNAVAILABLE` and the reason, then closes
/// (GOAWAY), so its next call comes on a new connection that tries the server again.
async fn refuse_grpc(local: UnixStream, why: String) {
    let message = grpc_percent_encode(&why);
    let (called_tx, mut called) = tokio::sync::mpsc::channel::<()>(1);
    let svc = hyper::service::service_fn(move |_req: hyper::Request<hyper::body::Incoming>| {
        let _ = called_tx.try_send(());
        let r = hyper::Response::builder()
            .status(200)
            .header("content-type", "application/grpc")
            .header("grpc-status", "14")
            .header("grpc-message", message.as_str())
            .body(Full::new(Bytes::new()));
        async move { r }
    });
    let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .serve_connection(TokioIo::new(local), svc);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => return,
        _ = called.recv() => conn.as_mut().graceful_shutdown(),
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), conn).await;
}

/// Answers the local HTTP/1.1 client with 502, the refusal header (its `reason`) and the
/// message, then closes.
async fn refuse_http1(local: UnixStream, why: String, reason: &'static str) {
    let body = serde_json::json!({ "error": why }).to_string();
    let svc = hyper::service::service_fn(move |_req: hyper::Request<hyper::body::Incoming>| {
        let r = hyper::Response::builder()
            .status(502)
            .header("content-type", "application/json")
            .header(REFUSED_HEADER, reason)
            .header("connection", "close")
            .body(Full::new(Bytes::from(body.clone())));
        async move { r }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .keep_alive(false)
        .serve_connection(TokioIo::new(local), svc);
    let _ = tokio::time::timeout(Duration::from_secs(5), conn).await;
}

/// gRPC's percent-encoding of `grpc-message`: bytes outside printable ASCII, and `%`.
fn grpc_percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if (0x20..0x7f).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_owners_process_is_admitted() {
        let owner = Owner {
            uid: 1000,
            pid: 4242,
        };
        assert!(owner.admits(1000, Some(4242)));
        // Another process of the same user, another user, either unknown.
        assert!(!owner.admits(1000, Some(4243)));
        assert!(!owner.admits(0, Some(4242)));
        assert!(!owner.admits(1000, None));
        assert!(!owner.admits(1000, Some(-1)));
    }

    #[test]
    fn grpc_message_is_percent_encoded() {
        assert_eq!(grpc_percent_encode("a 100% é"), "a 100%25 %C3%A9");
    }
}
