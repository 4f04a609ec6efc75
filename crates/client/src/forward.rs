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
//! process is not the forwarder's own is closed before anything reaches the server. For
//! clients that can only dial TCP (Triton's HTTP client), [`Forwarder::start_tcp`] listens on
//! a loopback port instead, and admits a connection only when its peer socket is one of this
//! process's own descriptors (Linux: the peer's socket inode, found in `/proc/net/tcp`, among
//! the links of `/proc/self/fd`). So another
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
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};
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
    tcp: Option<std::net::SocketAddr>,
    /// For a TCP forwarder: a second descriptor of its listening socket and the runtime, so
    /// that closing keeps the port bound (refusing every connection) for as long as the
    /// process lives. Released, the port could be taken by another local process, and a
    /// client still holding its address would send that process its requests.
    reserved: Option<(std::net::TcpListener, tokio::runtime::Handle)>,
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
            Listener::Unix(listener, owner),
            Arc::new(upstream),
            protocol,
            last_error.clone(),
        ));
        Ok(Self {
            path,
            tcp: None,
            reserved: None,
            dir: Some(dir),
            task: Some(task),
            last_error,
        })
    }

    /// Starts a forwarder on `runtime`, listening on a loopback TCP port (127.0.0.1, chosen by
    /// the system) that admits only this process's own connections.
    pub fn start_tcp(
        runtime: &tokio::runtime::Handle,
        upstream: Upstream,
        protocol: Protocol,
    ) -> std::io::Result<Self> {
        let (listener, reserved) = {
            let _in_runtime = runtime.enter();
            let std = std::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0))?;
            std.set_nonblocking(true)?;
            let reserved = std.try_clone()?;
            (TcpListener::from_std(std)?, reserved)
        };
        let addr = listener.local_addr()?;
        let last_error = Arc::new(Mutex::new(None));
        let task = runtime.spawn(accept_loop(
            Listener::Tcp(listener),
            Arc::new(upstream),
            protocol,
            last_error.clone(),
        ));
        Ok(Self {
            path: PathBuf::new(),
            tcp: Some(addr),
            reserved: Some((reserved, runtime.clone())),
            dir: None,
            task: Some(task),
            last_error,
        })
    }

    /// The socket to connect to (empty for a TCP forwarder).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The loopback address to connect to, for a TCP forwarder.
    pub fn tcp_addr(&self) -> Option<std::net::SocketAddr> {
        self.tcp
    }

    /// Why the last connection to the server was refused or failed, if it was.
    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().ok().and_then(|e| e.clone())
    }

    /// True once closed.
    pub fn is_closed(&self) -> bool {
        self.task.is_none()
    }

    /// Stops carrying, ends the connections being carried and removes the socket; a TCP
    /// port stays bound, closing every connection made to it, until the process exits.
    pub fn close(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
        if let Some((listener, runtime)) = self.reserved.take() {
            runtime.spawn(async move {
                let Ok(listener) = TcpListener::from_std(listener) else {
                    return;
                };
                loop {
                    // Accepted and dropped: closed unanswered.
                    if listener.accept().await.is_err() {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            });
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

/// Where local clients connect, and who among them is admitted.
enum Listener {
    /// A Unix socket; its peers checked against the owner's credentials.
    Unix(UnixListener, Owner),
    /// A loopback TCP port; its peers must be this process's own sockets.
    Tcp(TcpListener),
}

/// A local connection to carry.
trait Local: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Local for T {}

/// Checks of TCP connections running at once.
static CHECKS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(4);

/// What [`Forwarder::last_error`] says after a connection from elsewhere was closed.
const REFUSED: &str = "a local connection from another process was closed: an endpoint carries only the connections of the process that made it (one made before a fork serves the parent only; make it in the process that uses it)";

/// A connection accepted: ready to carry, or from TCP, to be checked first (in its own task,
/// so that a flood of connections to check does not hold up the accept loop).
enum Pending {
    Ready(Box<dyn Local>),
    /// Another process's connection over the Unix socket, closed once dropped.
    Refused,
    Tcp(
        tokio::net::TcpStream,
        std::net::SocketAddr,
        std::net::SocketAddr,
    ),
}

impl Pending {
    /// The connection, once admitted; `None` (and the connection closed) otherwise.
    async fn admitted(self) -> Option<Box<dyn Local>> {
        let (local, peer, me) = match self {
            Pending::Ready(l) => return Some(l),
            Pending::Refused => return None,
            Pending::Tcp(s, peer, me) => (s, peer, me),
        };
        let fd = {
            use std::os::fd::AsRawFd;
            local.as_raw_fd()
        };
        // At most a few checks at once (each reads the host's TCP tables): a flood of
        // connections waits here rather than taking a blocking thread each.
        let _check = CHECKS.acquire().await.ok()?;
        // The stream is held (so the descriptor stays this socket) until the check is done.
        let ours = tokio::task::spawn_blocking(move || {
            socket_inode(fd).is_some_and(|accepted| own_tcp_peer(peer, me, accepted))
        })
        .await
        .unwrap_or(false);
        ours.then(|| {
            let _ = local.set_nodelay(true);
            Box::new(local) as Box<dyn Local>
        })
    }
}

impl Listener {
    /// The next connection (one to refuse included); `None` when accepting failed.
    async fn next(&self) -> Option<Pending> {
        match self {
            Listener::Unix(l, owner) => {
                let Ok((local, _)) = l.accept().await else {
                    // Out of descriptors and the like: wait instead of spinning.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    return None;
                };
                // Anyone else is closed unanswered: dropping the stream closes it.
                let peer = local.peer_cred().ok()?;
                Some(if owner.admits(peer.uid(), peer.pid()) {
                    Pending::Ready(Box::new(local))
                } else {
                    Pending::Refused
                })
            }
            Listener::Tcp(l) => {
                let Ok((local, peer)) = l.accept().await else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    return None;
                };
                let me = local.local_addr().ok()?;
                Some(Pending::Tcp(local, peer, me))
            }
        }
    }
}

/// The inode of the socket behind descriptor `fd` of this process (`socket:[N]`).
fn socket_inode(fd: i32) -> Option<u64> {
    let link = std::fs::read_link(format!("/proc/self/fd/{fd}")).ok()?;
    link.to_str()?
        .strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// Whether the TCP connection from `peer` to `me` (both on 127.0.0.1), accepted as the socket
/// of inode `accepted`, was made by a socket of this process. The connection's row in
/// `/proc/net/tcp` must still be the accepted socket's (one reset since has no row, and its
/// address may already be another connection's), and the peer's row (local address `peer`,
/// remote `me`) must name a socket among the links of `/proc/self/fd`. False wherever either
/// cannot be read.
fn own_tcp_peer(peer: std::net::SocketAddr, me: std::net::SocketAddr, accepted: u64) -> bool {
    // The peer's socket is an IPv4 one (in /proc/net/tcp), or a dual-stack IPv6 one that
    // dialled the IPv4 address, listed in /proc/net/tcp6 with IPv4-mapped addresses (gRPC's).
    let tables: Vec<String> = ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|t| std::fs::read_to_string(t).ok())
        .collect();
    let find = |local, remote| tables.iter().find_map(|t| tcp_inode(t, local, remote));
    if find(me, peer) != Some(accepted) {
        return false;
    }
    let Some(inode) = find(peer, me) else {
        return false;
    };
    let want = format!("socket:[{inode}]");
    let Ok(fds) = std::fs::read_dir("/proc/self/fd") else {
        return false;
    };
    fds.flatten()
        .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|l| l.as_os_str() == want.as_str()))
}

/// The inode of the socket whose local address is `local` and remote `remote` (IPv4, also
/// as IPv4-mapped IPv6 addresses), from the text of `/proc/net/tcp` or `/proc/net/tcp6`
/// (Linux `proc(5)`: an address as its 32-bit words in host order, `%08X` each, then `:%04X`
/// and the port; `inode` the tenth column).
fn tcp_inode(
    table: &str,
    local: std::net::SocketAddr,
    remote: std::net::SocketAddr,
) -> Option<u64> {
    fn words(octets: &[u8]) -> String {
        octets
            .chunks_exact(4)
            .map(|w| format!("{:08X}", u32::from_ne_bytes([w[0], w[1], w[2], w[3]])))
            .collect()
    }
    fn forms(a: std::net::SocketAddr) -> Option<[String; 2]> {
        let std::net::SocketAddr::V4(a) = a else {
            return None;
        };
        let v4 = words(&a.ip().octets());
        let mapped = words(&a.ip().to_ipv6_mapped().octets());
        Some([
            format!("{v4}:{:04X}", a.port()),
            format!("{mapped}:{:04X}", a.port()),
        ])
    }
    let (l, r) = (forms(local)?, forms(remote)?);
    table.lines().skip(1).find_map(|line| {
        let cols: Vec<&str> = line.split_whitespace().collect();
        let (Some(cl), Some(cr)) = (cols.get(1), cols.get(2)) else {
            return None;
        };
        let hit = (0..2).any(|k| *cl == l[k] && *cr == r[k]);
        hit.then(|| cols.get(9)?.parse().ok()).flatten()
    })
}

async fn accept_loop(
    listener: Listener,
    upstream: Arc<Upstream>,
    protocol: Protocol,
    last_error: Arc<Mutex<Option<String>>>,
) {
    // The connections live in this set: aborting the loop drops it, which ends them all.
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            pending = listener.next() => {
                if let Some(pending) = pending {
                    let (upstream, last_error) = (upstream.clone(), last_error.clone());
                    conns.spawn(async move {
                        match pending.admitted().await {
                            Some(local) => carry(local, upstream, protocol, last_error).await,
                            None => {
                                if let Ok(mut e) = last_error.lock() {
                                    *e = Some(REFUSED.to_owned());
                                }
                            }
                        }
                    });
                }
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

/// Carries one local connection to the server, or answers it with the refusal.
async fn carry(
    mut local: Box<dyn Local>,
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
async fn refuse_grpc(local: Box<dyn Local>, why: String) {
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
async fn refuse_http1(local: Box<dyn Local>, why: String, reason: &'static str) {
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
    fn tcp_rows_name_their_inode() {
        // Two rows as Linux writes them: a listener on 127.0.0.1:8080 and a connection from
        // 127.0.0.1:40000 to it (x86's byte order: 127.0.0.1 is 0100007F).
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 111 1 0 100 0 0 10 0\n   1: 0100007F:9C40 0100007F:1F90 01 00000000:00000000 00:00000000 00000000  1000        0 222 1 0 20 4 30 10 -1\n";
        let peer: std::net::SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let me: std::net::SocketAddr = "127.0.0.1:8080".parse().unwrap();
        if cfg!(target_endian = "little") {
            assert_eq!(tcp_inode(table, peer, me), Some(222));
        }
        assert_eq!(tcp_inode(table, me, peer), None);
    }

    fn inode(s: &tokio::net::TcpStream) -> u64 {
        use std::os::fd::AsRawFd;
        socket_inode(s.as_raw_fd()).unwrap()
    }

    #[tokio::test]
    async fn only_this_processs_tcp_connections_are_its_own() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let me = l.local_addr().unwrap();
        let _c = tokio::net::TcpStream::connect(me).await.unwrap();
        let (s, peer) = l.accept().await.unwrap();
        assert!(own_tcp_peer(peer, me, inode(&s)));
        // Not as another accepted socket's connection.
        assert!(!own_tcp_peer(peer, me, inode(&s) + 1));
        // A dual-stack IPv6 socket dialling the IPv4 address (as gRPC does) is listed in
        // /proc/net/tcp6 under IPv4-mapped addresses.
        let v6 = tokio::net::TcpSocket::new_v6().unwrap();
        let mapped = std::net::SocketAddr::new(
            std::net::Ipv4Addr::LOCALHOST.to_ipv6_mapped().into(),
            me.port(),
        );
        let _c6 = v6.connect(mapped).await.unwrap();
        let (s6, peer6) = l.accept().await.unwrap();
        assert!(own_tcp_peer(peer6, me, inode(&s6)));
        // A connection reset once accepted is no one's: its address may be another's by now.
        let resets = tokio::net::TcpSocket::new_v4().unwrap();
        // A zero linger closes with RST, without blocking.
        #[allow(deprecated)]
        resets.set_linger(Some(Duration::ZERO)).unwrap();
        let c3 = resets.connect(me).await.unwrap();
        let (s3, peer3) = l.accept().await.unwrap();
        let accepted = inode(&s3);
        assert!(own_tcp_peer(peer3, me, accepted));
        drop(c3);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!own_tcp_peer(peer3, me, accepted));
        // Another process's connection (bash's /dev/tcp) is not.
        let mut other = std::process::Command::new("bash")
            .args([
                "-c",
                &format!("exec 3<>/dev/tcp/127.0.0.1/{}; sleep 10", me.port()),
            ])
            .spawn()
            .unwrap();
        let (s2, peer2) = l.accept().await.unwrap();
        let theirs = own_tcp_peer(peer2, me, inode(&s2));
        let _ = other.kill();
        let _ = other.wait();
        assert!(!theirs);
    }

    #[test]
    fn a_closed_tcp_forwarders_port_stays_bound_and_refuses() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        // Never dialled: the test is of the local port.
        let roots = rustls::RootCertStore::empty();
        let tls = Arc::new(
            rustls::ClientConfig::builder_with_provider(teeserve_tls::provider())
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth(),
        );
        let upstream = Upstream {
            addr: "127.0.0.1:9".into(),
            server_name: "localhost".into(),
            tls,
        };
        let mut f = Forwarder::start_tcp(rt.handle(), upstream, Protocol::Grpc).unwrap();
        let addr = f.tcp_addr().unwrap();
        f.close();
        // Another process (or this one) cannot take the port a client may still be dialling.
        let taken = std::net::TcpListener::bind(addr);
        assert_eq!(
            taken.err().map(|e| e.kind()),
            Some(std::io::ErrorKind::AddrInUse)
        );
        // A connection to it is closed unanswered.
        rt.block_on(async {
            use tokio::io::AsyncReadExt;
            let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
            let mut buf = [0u8; 1];
            let n = tokio::time::timeout(Duration::from_secs(5), c.read(&mut buf))
                .await
                .expect("the connection is closed, not left hanging");
            assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
        });
    }

    #[test]
    fn grpc_message_is_percent_encoded() {
        assert_eq!(grpc_percent_encode("a 100% é"), "a 100%25 %C3%A9");
    }
}
