//! The gRPC services: `tensorflow.serving.PredictionService`, `tensorflow.serving.ModelService`
//! and `grpc.health.v1.Health`.

use std::pin::Pin;
use std::sync::Arc;

use futures::StreamExt as _;
use tonic::{Request, Response, Status};

use crate::api::classify;
use crate::api::error::ApiError;
use crate::api::service::ServingCore;
use teeserve_wire::code_name;
use teeserve_wire::health::{
    health_check_response::ServingStatus, health_server, HealthCheckRequest, HealthCheckResponse,
};
use teeserve_wire::tensorflow::serving::{
    model_service_server, prediction_service_server, ClassificationRequest, ClassificationResponse,
    GetModelMetadataRequest, GetModelMetadataResponse, GetModelStatusRequest,
    GetModelStatusResponse, PredictRequest, PredictResponse, RegressionRequest, RegressionResponse,
    ReloadConfigRequest, ReloadConfigResponse,
};

use crate::network::connection::ClientCertificates;

/// Both TF Serving services over one core.
#[derive(Debug, Clone)]
pub(crate) struct Grpc {
    pub(crate) core: Arc<ServingCore>,
    pub(crate) reload: Arc<ReloadAccess>,
}

/// Who may call `HandleReloadConfigRequest`.
pub(crate) enum ReloadAccess {
    /// Nobody (the default).
    Off,
    /// Clients whose certificate this verifier accepts.
    Clients(Arc<dyn rustls::server::danger::ClientCertVerifier>),
    /// Anyone who reaches the port.
    Anyone,
}

impl std::fmt::Debug for ReloadAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ReloadAccess::Off => "Off",
            ReloadAccess::Clients(_) => "Clients",
            ReloadAccess::Anyone => "Anyone",
        })
    }
}

impl ReloadAccess {
    /// Whether a caller that presented `client` (its TLS certificate chain) may reload.
    fn admit(&self, client: Option<&ClientCertificates>) -> Result<(), Status> {
        let verifier = match self {
            ReloadAccess::Anyone => return Ok(()),
            ReloadAccess::Off => {
                return Err(Status::permission_denied(
                    "HandleReloadConfigRequest is off on this server: it replaces the served models, so only clients with a certificate from the CA given to --reload_config_client_ca may call it (or anyone, with --reload_config_from_anyone)",
                ))
            }
            ReloadAccess::Clients(v) => v,
        };
        let chain = client.and_then(|c| c.0.split_first());
        let admitted = chain.is_some_and(|(end_entity, intermediates)| {
            verifier
                .verify_client_cert(
                    end_entity,
                    intermediates,
                    rustls::pki_types::UnixTime::now(),
                )
                .is_ok()
        });
        if admitted {
            Ok(())
        } else {
            Err(Status::permission_denied(
                "HandleReloadConfigRequest needs a client certificate that chains to the CA given to --reload_config_client_ca",
            ))
        }
    }
}

#[tonic::async_trait]
impl prediction_service_server::PredictionService for Grpc {
    async fn classify(
        &self,
        req: Request<ClassificationRequest>,
    ) -> Result<Response<ClassificationResponse>, Status> {
        classify::classify(&self.core, req.into_inner())
            .await
            .map(Response::new)
            .map_err(ApiError::into_status)
    }

    async fn regress(
        &self,
        req: Request<RegressionRequest>,
    ) -> Result<Response<RegressionResponse>, Status> {
        classify::regress(&self.core, req.into_inner())
            .await
            .map(Response::new)
            .map_err(ApiError::into_status)
    }

    async fn predict(
        &self,
        req: Request<PredictRequest>,
    ) -> Result<Response<PredictResponse>, Status> {
        let start = std::time::Instant::now();
        let r = req.into_inner();
        let name = r
            .model_spec
            .as_ref()
            .map(|s| s.name.clone())
            .unwrap_or_default();
        let out = self.core.predict(r).await;
        crate::network::access_log::grpc_answer("Predict", &name, start, out)
    }

    async fn get_model_metadata(
        &self,
        req: Request<GetModelMetadataRequest>,
    ) -> Result<Response<GetModelMetadataResponse>, Status> {
        self.core
            .metadata(req.get_ref())
            .map(Response::new)
            .map_err(ApiError::into_status)
    }
}

#[tonic::async_trait]
impl model_service_server::ModelService for Grpc {
    async fn get_model_status(
        &self,
        req: Request<GetModelStatusRequest>,
    ) -> Result<Response<GetModelStatusResponse>, Status> {
        self.core
            .status(req.get_ref())
            .map(Response::new)
            .map_err(ApiError::into_status)
    }

    async fn handle_reload_config_request(
        &self,
        req: Request<ReloadConfigRequest>,
    ) -> Result<Response<ReloadConfigResponse>, Status> {
        let start = std::time::Instant::now();
        let admitted = self
            .reload
            .admit(req.extensions().get::<ClientCertificates>());
        let out = match admitted {
            Ok(()) => self
                .core
                .reload_config(req.get_ref())
                .await
                .map_err(ApiError::into_status),
            Err(e) => Err(e),
        };
        crate::network::access_log::access_log(
            "grpc",
            "HandleReloadConfigRequest",
            "",
            &out.as_ref()
                .map(|_| "OK")
                .unwrap_or_else(|e| code_name(e.code())),
            start,
        );
        out.map(Response::new)
    }
}

/// The standard health service: SERVING once every configured model is available.
#[derive(Debug, Clone)]
pub(crate) struct Health(pub Arc<ServingCore>);

type WatchStream = Pin<
    Box<
        dyn tonic::codegen::tokio_stream::Stream<Item = Result<HealthCheckResponse, Status>> + Send,
    >,
>;

impl Health {
    fn check_service(&self, service: &str) -> Result<HealthCheckResponse, Status> {
        let known = [
            "",
            "tensorflow.serving.PredictionService",
            "tensorflow.serving.ModelService",
            "PredictionService",
            "ModelService",
        ];
        if !known.contains(&service) {
            return Err(Status::not_found(format!("unknown service {service:?}")));
        }
        let status = if self.0.repo.ready() {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        Ok(HealthCheckResponse {
            status: status as i32,
        })
    }
}

#[tonic::async_trait]
impl health_server::Health for Health {
    async fn check(
        &self,
        req: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        self.check_service(&req.get_ref().service)
            .map(Response::new)
    }

    type WatchStream = WatchStream;

    async fn watch(
        &self,
        req: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let first = self.check_service(&req.get_ref().service)?;
        // The stream ends when its connection starts closing, so that it never holds the
        // connection open; a client watches again on a new one.
        let closing = req
            .extensions()
            .get::<crate::network::connection::Closing>()
            .map(|c| c.0.clone());
        let watch = Watch {
            health: self.clone(),
            service: req.into_inner().service,
            last: first.status,
            closing,
        };
        let s = futures::stream::once(async move { Ok(first) })
            .chain(futures::stream::unfold(watch, Watch::next));
        Ok(Response::new(Box::pin(s)))
    }
}

/// How often a health `Watch` looks at the status again.
const WATCH_POLL: std::time::Duration = std::time::Duration::from_secs(1);

/// A health `Watch` after its first answer: sends the status when it changes, and ends when
/// the connection starts closing.
struct Watch {
    health: Health,
    service: String,
    last: i32,
    closing: Option<tokio::sync::watch::Receiver<bool>>,
}

impl Watch {
    async fn next(mut self) -> Option<(Result<HealthCheckResponse, Status>, Self)> {
        loop {
            let tick = tokio::time::sleep(WATCH_POLL);
            match &mut self.closing {
                Some(c) => tokio::select! {
                    _ = tick => {}
                    _ = c.wait_for(|closing| *closing) => return None,
                },
                None => tick.await,
            }
            let now = match self.health.check_service(&self.service) {
                Ok(r) => r,
                Err(e) => return Some((Err(e), self)),
            };
            if now.status != self.last {
                self.last = now.status;
                return Some((Ok(now), self));
            }
        }
    }
}
