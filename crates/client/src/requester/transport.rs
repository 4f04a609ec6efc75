//! A gRPC channel to a teeserve (or TF Serving) endpoint on a caller-supplied rustls
//! configuration (so attested peers can be required). The REST client and the TLS helpers it
//! shares with it are `teeserve_client`'s.

use std::sync::Arc;

use crate::{connect_tls, RequesterError};
use hyper_util::rt::TokioIo;

/// A gRPC channel to `addr` over `tls` (None = plaintext).
pub async fn grpc_channel(
    addr: &str,
    tls: Option<Arc<rustls::ClientConfig>>,
    server_name: &str,
) -> Result<tonic::transport::Channel, RequesterError> {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let uri = format!("{scheme}://{addr}");
    let addr = addr.to_owned();
    let name = server_name.to_owned();
    let connector = tower::service_fn(move |_uri: hyper::Uri| {
        let (addr, tls, name) = (addr.clone(), tls.clone(), name.clone());
        async move { connect_tls(&addr, tls, &name).await.map(TokioIo::new) }
    });
    tonic::transport::Endpoint::from_shared(uri)
        .map_err(RequesterError::connect)?
        .initial_stream_window_size(teeserve_wire::H2_STREAM_WINDOW)
        .initial_connection_window_size(2 * teeserve_wire::H2_STREAM_WINDOW)
        .connect_with_connector(connector)
        .await
        .map_err(|e| RequesterError::connect(format!("cannot connect to {server_name}: {e:?}")))
}
