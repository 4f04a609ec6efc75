//! Predict (`PredictionService.Predict`): what each input declares is checked against the
//! signature and the request's bounds, and its memory reserved, before anything is decoded.

use crate::api::error::ApiError;
use crate::api::inputs::{check_declared, decode_inputs};
use crate::api::service::{lookup_signature, Entry, ServingCore};
use crate::engine::DEFAULT_SIGNATURE;
use crate::models::ResolvedModel;
use teeserve_wire::heavy;
use teeserve_wire::tensorflow::serving::{
    model_spec::VersionChoice, ModelSpec, PredictRequest, PredictResponse,
};

impl ServingCore {
    /// gRPC Predict. What each input declares (dtype, shape, decoded size) is checked against
    /// the signature and [`CoreOptions::max_tensor_bytes`](crate::api::CoreOptions::max_tensor_bytes), and its memory reserved, before
    /// any input is decoded: one value may fill a shape (TensorProto's rule), so a message of
    /// a few bytes can declare gigabytes.
    pub async fn predict(&self, req: PredictRequest) -> Result<PredictResponse, ApiError> {
        let target = self.resolve_spec(req.model_spec.as_ref())?;
        let sig_name = req
            .model_spec
            .as_ref()
            .map(|s| s.signature_name.clone())
            .unwrap_or_default();
        let sig = lookup_signature(target.model.signatures(), &sig_name, Entry::Grpc)?;
        let max = self.options.max_tensor_bytes;
        let total = check_declared(sig, &req.inputs, max)?;
        let _tensors = self.reserve(total, "the request's input tensors")?;
        // Decoded, and the answer encoded, aside from the I/O threads when large (heavy).
        let inputs = heavy::run(total, || decode_inputs(sig, &req.inputs, max))?;
        let outputs = self
            .infer(&target, &sig_name, inputs, &req.output_filter, Entry::Grpc)
            .await?;
        let bytes = outputs.iter().map(|(_, t)| t.data_bytes()).sum();
        let outputs = heavy::run(bytes, || {
            outputs
                .into_iter()
                .map(|(n, t)| (n, t.to_proto(self.options.tensor_content)))
                .collect()
        });
        Ok(PredictResponse {
            model_spec: Some(effective_spec(&target, &sig_name)),
            outputs,
        })
    }
}

pub(crate) fn effective_spec(t: &ResolvedModel, sig: &str) -> ModelSpec {
    ModelSpec {
        name: t.name.clone(),
        version_choice: Some(VersionChoice::Version(t.version)),
        signature_name: if sig.is_empty() {
            DEFAULT_SIGNATURE.into()
        } else {
            sig.into()
        },
    }
}
