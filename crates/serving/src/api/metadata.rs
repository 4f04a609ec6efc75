//! GetModelMetadata and GetModelStatus (`ModelService`): a model's signatures as TF Serving's
//! SignatureDefMap, and its versions' states.

use tonic::Code;

use crate::api::error::ApiError;
use crate::api::predict::effective_spec;
use crate::api::service::ServingCore;
use crate::models::State;
use teeserve_wire::tensorflow::serving::{
    model_spec::VersionChoice, model_version_status, GetModelMetadataRequest,
    GetModelMetadataResponse, GetModelStatusRequest, GetModelStatusResponse, ModelVersionStatus,
    StatusProto,
};

impl ServingCore {
    /// GetModelMetadata.
    pub fn metadata(
        &self,
        req: &GetModelMetadataRequest,
    ) -> Result<GetModelMetadataResponse, ApiError> {
        let target = self.resolve_spec(req.model_spec.as_ref())?;
        if req.metadata_field.is_empty() {
            return Err(ApiError::new(
                Code::InvalidArgument,
                "GetModelMetadataRequest must specify at least one metadata_field",
            ));
        }
        if let Some(f) = req
            .metadata_field
            .iter()
            .find(|f| f.as_str() != "signature_def")
        {
            return Err(ApiError::new(
                Code::InvalidArgument,
                format!("Metadata field {f} is not supported"),
            ));
        }
        let map = target.model.signatures().def_map();
        let any = prost_types::Any {
            type_url: "type.googleapis.com/tensorflow.serving.SignatureDefMap".into(),
            value: prost::Message::encode_to_vec(&map),
        };
        Ok(GetModelMetadataResponse {
            model_spec: Some(effective_spec(&target, "")),
            metadata: [("signature_def".to_owned(), any)].into_iter().collect(),
        })
    }

    /// GetModelStatus.
    pub fn status(&self, req: &GetModelStatusRequest) -> Result<GetModelStatusResponse, ApiError> {
        let spec = req
            .model_spec
            .as_ref()
            .ok_or_else(|| ApiError::new(Code::InvalidArgument, "Missing ModelSpec"))?;
        let (v, l) = match &spec.version_choice {
            Some(VersionChoice::Version(v)) => (Some(*v), None),
            Some(VersionChoice::VersionLabel(l)) => (None, Some(l.as_str())),
            None => (None, None),
        };
        self.status_of(&spec.name, v, l)
    }

    /// Status of a model's versions (one version when given).
    pub fn status_of(
        &self,
        name: &str,
        version: Option<i64>,
        label: Option<&str>,
    ) -> Result<GetModelStatusResponse, ApiError> {
        let m = self.repo.model(name).ok_or_else(|| {
            ApiError::new(
                Code::NotFound,
                format!("Could not find any versions of model {name}"),
            )
        })?;
        let version = match (version, label) {
            (Some(v), _) => Some(v),
            (None, Some(l)) => Some(*m.config.labels.get(l).ok_or_else(|| {
                ApiError::new(
                    Code::InvalidArgument,
                    format!("Unrecognized servable version label: {l}"),
                )
            })?),
            _ => None,
        };
        let mut out = Vec::new();
        for (v, s) in m.versions.iter().rev() {
            if version.is_some_and(|want| want != *v) {
                continue;
            }
            let (state, code, msg) = match s.state {
                State::Loading => (
                    model_version_status::State::Loading,
                    Code::Ok,
                    String::new(),
                ),
                State::Available => (
                    model_version_status::State::Available,
                    Code::Ok,
                    String::new(),
                ),
                State::End => (
                    model_version_status::State::End,
                    if s.error.is_some() {
                        Code::Unknown
                    } else {
                        Code::Ok
                    },
                    s.error.clone().unwrap_or_default(),
                ),
            };
            out.push(ModelVersionStatus {
                version: *v,
                state: state as i32,
                status: Some(StatusProto {
                    error_code: code as i32,
                    error_message: msg,
                }),
            });
        }
        if out.is_empty() {
            return Err(ApiError::new(
                Code::NotFound,
                match version {
                    Some(v) => format!("Could not find version {v} of model {name}"),
                    None => format!("Could not find any versions of model {name}"),
                },
            ));
        }
        Ok(GetModelStatusResponse {
            model_version_status: out,
        })
    }
}
