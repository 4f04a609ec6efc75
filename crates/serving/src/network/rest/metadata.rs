//! Model status, model metadata and the model list, as JSON.

use serde_json::{json, Map, Value};
use tonic::Code;

use crate::api::error::ApiError;
use crate::api::service::ServingCore;

pub(super) fn list_models(core: &ServingCore) -> String {
    let models: Vec<Value> = core
        .repo
        .names()
        .into_iter()
        .filter_map(|n| core.repo.model(&n))
        .map(|m| {
            json!({
                "name": m.config.name,
                "versions": m.versions.iter().rev().map(|(v, s)| json!({
                    "version": v.to_string(),
                    "state": match s.state { crate::models::State::Available => "AVAILABLE", crate::models::State::Loading => "LOADING", crate::models::State::End => "END" },
                })).collect::<Vec<_>>(),
                "labels": m.config.labels,
            })
        })
        .collect();
    json!({ "models": models }).to_string()
}

pub(super) fn status_json(
    core: &ServingCore,
    name: &str,
    version: Option<i64>,
    label: Option<&str>,
) -> Result<String, ApiError> {
    let s = core.status_of(name, version, label)?;
    let v: Vec<Value> = s
        .model_version_status
        .iter()
        .map(|m| {
            let st =
                teeserve_wire::tensorflow::serving::model_version_status::State::try_from(m.state)
                    .map(|s| s.as_str_name())
                    .unwrap_or("UNKNOWN");
            let status = m.status.clone().unwrap_or_default();
            json!({
                "version": m.version.to_string(),
                "state": st,
                "status": {
                    "error_code": teeserve_wire::code_name(Code::from_i32(status.error_code)),
                    "error_message": status.error_message,
                }
            })
        })
        .collect();
    Ok(serde_json::to_string_pretty(&json!({ "model_version_status": v })).unwrap_or_default())
}

pub(super) fn metadata_json(
    core: &ServingCore,
    name: &str,
    version: Option<i64>,
    label: Option<&str>,
) -> Result<String, ApiError> {
    let t = core.resolve(name, version, label)?;
    let info = |i: &teeserve_wire::tensorflow::TensorInfo| {
        let shape = i.tensor_shape.clone().unwrap_or_default();
        json!({
            "dtype": teeserve_wire::tensorflow::DataType::try_from(i.dtype).map(|d| d.as_str_name()).unwrap_or("DT_INVALID"),
            "tensor_shape": {
                "dim": shape.dim.iter().map(|d| json!({"size": d.size.to_string(), "name": d.name})).collect::<Vec<_>>(),
                "unknown_rank": shape.unknown_rank,
            },
            "name": match &i.encoding {
                Some(teeserve_wire::tensorflow::tensor_info::Encoding::Name(n)) => n.as_str(),
                None => "",
            },
        })
    };
    let defs: Map<String, Value> = t
        .model
        .signatures()
        .def_map()
        .signature_def
        .iter()
        .map(|(name, d)| {
            let io = |m: &std::collections::HashMap<String, teeserve_wire::tensorflow::TensorInfo>| {
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort();
                keys.into_iter()
                    .map(|k| (k.clone(), info(&m[k])))
                    .collect::<Map<String, Value>>()
            };
            (
                name.clone(),
                json!({"inputs": io(&d.inputs), "outputs": io(&d.outputs), "method_name": d.method_name, "defaults": {}}),
            )
        })
        .collect();
    let v = json!({
        "model_spec": {"name": t.name, "signature_name": "", "version": t.version.to_string()},
        "metadata": {"signature_def": {"signature_def": defs}}
    });
    Ok(serde_json::to_string_pretty(&v).unwrap_or_default())
}
