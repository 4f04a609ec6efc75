//! The Open Inference Protocol's gRPC service, `inference.GRPCInferenceService`, on the gRPC
//! port beside TF Serving's services, over the same core (admission, memory budget, models).

use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::api::error::ApiError;
use crate::api::service::ServingCore;
use crate::api::v2 as api;
use teeserve_wire::inference::{
    grpc_inference_service_server::GrpcInferenceService, model_metadata_response::TensorMetadata,
    ModelInferRequest, ModelInferResponse, ModelMetadataRequest, ModelMetadataResponse,
    ModelReadyRequest, ModelReadyResponse, ServerLiveRequest, ServerLiveResponse,
    ServerMetadataRequest, ServerMetadataResponse, ServerReadyRequest, ServerReadyResponse,
};

/// The service over one core.
#[derive(Debug, Clone)]
pub(crate) struct V2(pub(crate) Arc<ServingCore>);

#[tonic::async_trait]
impl GrpcInferenceService for V2 {
    async fn server_live(
        &self,
        _: Request<ServerLiveRequest>,
    ) -> Result<Response<ServerLiveResponse>, Status> {
        Ok(Response::new(ServerLiveResponse { live: true }))
    }

    async fn server_ready(
        &self,
        _: Request<ServerReadyRequest>,
    ) -> Result<Response<ServerReadyResponse>, Status> {
        Ok(Response::new(ServerReadyResponse {
            ready: self.0.repo.ready(),
        }))
    }

    async fn model_ready(
        &self,
        req: Request<ModelReadyRequest>,
    ) -> Result<Response<ModelReadyResponse>, Status> {
        let r = req.get_ref();
        self.0
            .v2_model_ready(&r.name, &r.version)
            .map(|ready| Response::new(ModelReadyResponse { ready }))
            .map_err(ApiError::into_status)
    }

    async fn server_metadata(
        &self,
        _: Request<ServerMetadataRequest>,
    ) -> Result<Response<ServerMetadataResponse>, Status> {
        Ok(Response::new(ServerMetadataResponse {
            name: api::SERVER_NAME.into(),
            version: env!("CARGO_PKG_VERSION").into(),
            extensions: api::EXTENSIONS.iter().map(|&e| e.into()).collect(),
        }))
    }

    async fn model_metadata(
        &self,
        req: Request<ModelMetadataRequest>,
    ) -> Result<Response<ModelMetadataResponse>, Status> {
        let r = req.get_ref();
        let m = self
            .0
            .v2_metadata(&r.name, &r.version)
            .map_err(ApiError::into_status)?;
        let tensors = |ts: Vec<api::TensorMetadata>| {
            ts.into_iter()
                .map(|t| TensorMetadata {
                    name: t.name,
                    datatype: t.datatype.into(),
                    shape: t.shape,
                })
                .collect()
        };
        Ok(Response::new(ModelMetadataResponse {
            name: m.name,
            versions: m.versions,
            platform: m.platform.into(),
            inputs: tensors(m.inputs),
            outputs: tensors(m.outputs),
        }))
    }

    async fn model_infer(
        &self,
        req: Request<ModelInferRequest>,
    ) -> Result<Response<ModelInferResponse>, Status> {
        let start = std::time::Instant::now();
        let r = req.into_inner();
        let name = r.model_name.clone();
        let out = self.0.model_infer(r).await;
        crate::network::access_log::grpc_answer("ModelInfer", &name, start, out)
    }
}
