//! The library floor, for bench/request_cost.sh: the smallest server made of the crates that
//! `teeserve serve` is made of, doing none of its work. rustls with the same crypto provider and
//! protocol versions, hyper-util's HTTP/1 and HTTP/2 server with the same HTTP/2 windows and
//! frame size, and tonic's generated `PredictionService`, which decodes every PredictRequest
//! and answers one fixed PredictResponse (the digits model's answer: ten probabilities); over
//! REST, every request is answered with one fixed JSON body of the same answer. Beside nginx it
//! shows what the libraries cost; beside teeserve, what teeserve adds to them.
//!
//!     floor CERT.pem KEY.pem GRPC_PORT REST_PORT
//!
//! Prints `listening grpc=ADDR rest=ADDR` once both ports are bound.
use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use teeserve_tensor::{Data, Tensor};
use teeserve_wire::tensorflow::serving::prediction_service_server::{
    PredictionService, PredictionServiceServer,
};
use teeserve_wire::tensorflow::serving::{
    ClassificationRequest, ClassificationResponse, GetModelMetadataRequest,
    GetModelMetadataResponse, ModelSpec, PredictRequest, PredictResponse, RegressionRequest,
    RegressionResponse,
};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tonic::{Request, Response, Status};

/// The fixed answer.
struct Fixed(PredictResponse);

#[tonic::async_trait]
impl PredictionService for Fixed {
    async fn classify(
        &self,
        _: Request<ClassificationRequest>,
    ) -> Result<Response<ClassificationResponse>, Status> {
        Err(Status::unimplemented("the floor answers Predict only"))
    }

    async fn regress(
        &self,
        _: Request<RegressionRequest>,
    ) -> Result<Response<RegressionResponse>, Status> {
        Err(Status::unimplemented("the floor answers Predict only"))
    }

    async fn predict(
        &self,
        _: Request<PredictRequest>,
    ) -> Result<Response<PredictResponse>, Status> {
        Ok(Response::new(self.0.clone()))
    }

    async fn get_model_metadata(
        &self,
        _: Request<GetModelMetadataRequest>,
    ) -> Result<Response<GetModelMetadataResponse>, Status> {
        Err(Status::unimplemented("the floor answers Predict only"))
    }
}

/// teeserve's HTTP settings (`network/listener.rs`): HTTP/2 windows for a 600 KB tensor in one
/// round trip, 256 KiB frames.
fn http_builder() -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http2()
        .initial_stream_window_size(teeserve_wire::H2_STREAM_WINDOW)
        .initial_connection_window_size(2 * teeserve_wire::H2_STREAM_WINDOW)
        .max_frame_size(teeserve_wire::H2_MAX_FRAME);
    builder
}

/// Accepts TLS connections on `listener` and serves each with `svc`.
async fn serve<S, B>(listener: TcpListener, tls: TlsAcceptor, svc: S)
where
    S: hyper::service::Service<
            hyper::Request<hyper::body::Incoming>,
            Response = hyper::Response<B>,
        > + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let builder = Arc::new(http_builder());
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            // Out of descriptors and the like: wait instead of spinning.
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let (tls, svc, builder) = (tls.clone(), svc.clone(), builder.clone());
        tokio::spawn(async move {
            let Ok(stream) = tls.accept(tcp).await else {
                return;
            };
            let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
        });
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [cert, key, grpc_port, rest_port] = args.as_slice() else {
        return Err("usage: floor CERT.pem KEY.pem GRPC_PORT REST_PORT".into());
    };
    let chain = teeserve_tls::load_certs(cert.as_ref())?;
    let key = teeserve_tls::load_key(key.as_ref())?;
    let mut config = rustls::ServerConfig::builder_with_provider(teeserve_tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let tls = TlsAcceptor::from(Arc::new(config));

    let probabilities = Tensor {
        shape: vec![1, 10],
        data: Data::F32(vec![0.1; 10]),
    };
    let answer = PredictResponse {
        model_spec: Some(ModelSpec {
            name: "digits".into(),
            ..Default::default()
        }),
        outputs: [("probabilities".to_owned(), probabilities.to_proto(false))]
            .into_iter()
            .collect(),
    };
    let grpc =
        hyper_util::service::TowerToHyperService::new(PredictionServiceServer::new(Fixed(answer)));
    let json = Bytes::from_static(
        br#"{"predictions": [[0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1]]}"#,
    );
    let rest = hyper::service::service_fn(move |_req: hyper::Request<hyper::body::Incoming>| {
        let json = json.clone();
        async move {
            let mut r = hyper::Response::new(Full::new(json));
            r.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static("application/json"),
            );
            Ok::<_, Infallible>(r)
        }
    });

    let grpc_listener = TcpListener::bind(("127.0.0.1", grpc_port.parse::<u16>()?)).await?;
    let rest_listener = TcpListener::bind(("127.0.0.1", rest_port.parse::<u16>()?)).await?;
    println!(
        "listening grpc={} rest={}",
        grpc_listener.local_addr()?,
        rest_listener.local_addr()?
    );
    tokio::spawn(serve(grpc_listener, tls.clone(), grpc));
    serve(rest_listener, tls, rest).await;
    Ok(())
}
