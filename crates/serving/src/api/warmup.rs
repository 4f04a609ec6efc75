//! Model warmup as TF Serving does it: the records of a version's warmup file are replayed on
//! the loaded model before the version becomes AVAILABLE, so that the first requests do not
//! pay for lazy initialisation (tract's plans for the shapes requests send, TensorFlow's first
//! session run). The repository reads the file (`models::warmup_file`) and calls [`WarmupReplay`].

use prost::Message;

use crate::api::classify::{self, CLASSIFY_METHOD, REGRESS_METHOD};
use crate::engine::LoadedModel;
use crate::models::{WarmUp, WarmupError};
use teeserve_tensor::Tensor;
use teeserve_wire::tensorflow::serving::{prediction_log, Input, ModelSpec, PredictionLog};

/// The most bytes one warmup input decodes into: the default bound of a request's inputs.
const MAX_TENSOR_BYTES: usize = crate::api::service::DEFAULT_MAX_TENSOR_BYTES;

/// The serving API's replay of warmup records, as the repository runs it after a version loads.
#[derive(Debug, Default, Clone, Copy)]
pub struct WarmupReplay;

impl WarmUp for WarmupReplay {
    fn replay(&self, model: &dyn LoadedModel, file: &[u8]) -> Result<usize, WarmupError> {
        replay(model, file)
    }
}

/// Replays the warmup records on `model`; gives the number of records replayed. A predict log
/// runs its request on the signature it names; a classify or regress log runs its examples as
/// Classify and Regress would (a classification or regression signature takes them serialized;
/// another model takes them as rows of floats).
pub(crate) fn replay(model: &dyn LoadedModel, file: &[u8]) -> Result<usize, WarmupError> {
    let records = crate::models::warmup_records(file)?;
    let mut replayed = 0;
    for (record, data) in records.iter().enumerate() {
        let fail = |reason: String| WarmupError::Record { record, reason };
        let log =
            PredictionLog::decode(*data).map_err(|e| fail(format!("not a PredictionLog: {e}")))?;
        match log.log_type {
            Some(prediction_log::LogType::PredictLog(p)) => {
                let req = p
                    .request
                    .ok_or_else(|| fail("predict_log has no request".into()))?;
                let name = req
                    .model_spec
                    .as_ref()
                    .map(|s| s.signature_name.as_str())
                    .unwrap_or_default();
                let sig = model
                    .signatures()
                    .get(name)
                    .ok_or_else(|| fail(format!("no signature {name:?}")))?;
                let mut inputs = Vec::with_capacity(sig.inputs.len());
                for spec in &sig.inputs {
                    let tp = req
                        .inputs
                        .get(&spec.name)
                        .ok_or_else(|| fail(format!("no input {:?}", spec.name)))?;
                    // Bounded as a request's inputs are, before anything is allocated: a
                    // record of a few bytes may declare a shape of gigabytes.
                    let t = Tensor::from_proto_within(tp, MAX_TENSOR_BYTES)
                        .map_err(|e| fail(format!("input {:?}: {e}", spec.name)))?;
                    inputs.push(t);
                }
                model
                    .run(name, inputs)
                    .map_err(|e| fail(format!("the model refused it: {e}")))?;
                replayed += 1;
            }
            Some(prediction_log::LogType::ClassifyLog(c)) => {
                let req = c
                    .request
                    .ok_or_else(|| fail("classify_log has no request".into()))?;
                run_examples(
                    model,
                    req.model_spec.as_ref(),
                    req.input.as_ref(),
                    CLASSIFY_METHOD,
                )
                .map_err(fail)?;
                replayed += 1;
            }
            Some(prediction_log::LogType::RegressLog(r)) => {
                let req = r
                    .request
                    .ok_or_else(|| fail("regress_log has no request".into()))?;
                run_examples(
                    model,
                    req.model_spec.as_ref(),
                    req.input.as_ref(),
                    REGRESS_METHOD,
                )
                .map_err(fail)?;
                replayed += 1;
            }
            None => {
                return Err(fail(
                    "a PredictionLog of a kind teeserve does not replay".into(),
                ))
            }
        }
    }
    Ok(replayed)
}

/// Runs the examples of a Classify or Regress request (`method` says which) on `model`, with
/// the inputs the live request would give it, bounded as a request's are.
fn run_examples(
    model: &dyn LoadedModel,
    spec: Option<&ModelSpec>,
    input: Option<&Input>,
    method: &str,
) -> Result<(), String> {
    let name = spec.map(|s| s.signature_name.as_str()).unwrap_or_default();
    if model.signatures().method(name) == Some(method) {
        let sig = model
            .signatures()
            .get(name)
            .ok_or_else(|| format!("no signature {name:?}"))?;
        let serialized =
            classify::serialized_examples(input, MAX_TENSOR_BYTES).map_err(|e| e.message)?;
        let n = serialized.len();
        let (_, t) = classify::examples_tensor(sig, serialized).map_err(|e| e.message)?;
        let outs = model
            .run(name, vec![t])
            .map_err(|e| format!("the model refused it: {e}"))?;
        // Its outputs read as Classify or Regress reads them: a signature whose outputs they
        // could not answer fails here as the live request would.
        let outs: Vec<(String, Tensor)> = sig
            .outputs
            .iter()
            .map(|s| s.name.clone())
            .zip(outs)
            .collect();
        let read = if method == CLASSIFY_METHOD {
            classify::classifications(&outs, n).map(drop)
        } else {
            classify::regressions(&outs, n).map(drop)
        };
        return read.map_err(|e| e.message);
    }
    if !name.is_empty() && model.signatures().get(name).is_none() {
        return Err(format!("no signature {name:?}"));
    }
    let rows = classify::rows(input, MAX_TENSOR_BYTES).map_err(|e| e.message)?;
    // The rows rule of a model without such a signature: as wide as the first example.
    let width = rows[0].len();
    let t = classify::rows_tensor(rows, width).map_err(|e| e.message)?;
    let out = model
        .run("", vec![t])
        .map_err(|e| format!("the model refused it: {e}"))?;
    let first = out
        .first()
        .ok_or_else(|| "the model gave no output".to_owned())?;
    let (_, values, _) = classify::scores(first).map_err(|e| e.message)?;
    if method == REGRESS_METHOD && values != 1 {
        return Err(format!(
            "Regress needs one value per example; the model gives {values}"
        ));
    }
    Ok(())
}
