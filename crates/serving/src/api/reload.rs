//! `ModelService.HandleReloadConfigRequest`: a new ModelServerConfig replaces the served models
//! (TF Serving's `model_service_impl.cc`): models it omits are unloaded, new ones load under
//! the same rules as at start (sealed only when a key is held, the owner's admitted list, the
//! operator policy), and the answer waits for the result. Who may call it is the network
//! layer's decision.

use tonic::Code;

use crate::api::error::ApiError;
use crate::api::service::ServingCore;
use crate::models::model_server_config_message;
use teeserve_wire::tensorflow::serving::{ReloadConfigRequest, ReloadConfigResponse, StatusProto};

impl ServingCore {
    /// Replaces the served models with the request's, and answers once they have loaded: OK,
    /// or the first failure (INVALID_ARGUMENT for a config it cannot read, UNKNOWN naming each
    /// model that did not load; the models that did load are served).
    pub async fn reload_config(
        &self,
        req: &ReloadConfigRequest,
    ) -> Result<ReloadConfigResponse, ApiError> {
        let configs = model_server_config_message(req.config.as_ref())
            .map_err(|e| ApiError::new(Code::InvalidArgument, e.to_string()))?;
        let repo = self.repo.clone();
        let reloaded = tokio::task::spawn_blocking(move || repo.reload(configs, "rpc"))
            .await
            .map_err(|e| ApiError::new(Code::Internal, format!("reload failed: {e}")))?;
        if !reloaded.unavailable.is_empty() {
            return Err(ApiError::new(
                Code::Unknown,
                reloaded.unavailable.join("; "),
            ));
        }
        Ok(ReloadConfigResponse {
            status: Some(StatusProto {
                error_code: 0,
                error_message: String::new(),
            }),
            metric: Vec::new(),
        })
    }
}
