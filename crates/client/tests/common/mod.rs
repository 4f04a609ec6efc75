//! What the client's tests share: a TLS server on loopback that answers as told.

use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A TLS server on `listener` that answers every connection with `reply` once it has read a
/// request head.
pub fn tls_server(
    listener: std::net::TcpListener,
    cert: &teeserve_tls::IssuedCert,
    reply: &'static [u8],
) {
    let chain = teeserve_tls::certs_from_pem(cert.cert_pem.as_bytes()).unwrap();
    let key = teeserve_tls::key_from_pem(cert.key_pem.as_bytes()).unwrap();
    let cfg = rustls::ServerConfig::builder_with_provider(teeserve_tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    listener.set_nonblocking(true).unwrap();
    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut s) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut buf = vec![0u8; 4096];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = s.write_all(reply).await;
                let _ = s.shutdown().await;
            });
        }
    });
}
