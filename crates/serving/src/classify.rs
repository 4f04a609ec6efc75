//! Classify and Regress for ONNX models whose signature fits: one float input `[batch, F]`
//! and one float output, `[batch, C]` class scores (classify) or `[batch]` / `[batch, 1]`
//! values (regress). Each tf.Example becomes one row: its features (context first) in name
//! order, float and int64 values as floats.

use tonic::Code;

use crate::error::ApiError;
use crate::proto::tensorflow::serving::{
    input, Class, ClassificationRequest, ClassificationResponse, ClassificationResult,
    Classifications, Input, ModelSpec, Regression, RegressionRequest, RegressionResponse,
    RegressionResult,
};
use crate::proto::tensorflow::{feature, Example};
use crate::repository::ResolvedModel;
use crate::service::{Entry, ServingCore};
use crate::tensor::{DType, Data, Tensor};

fn features(e: &Example, out: &mut Vec<f32>) -> Result<(), ApiError> {
    let mut names: Vec<(&String, &crate::proto::tensorflow::Feature)> = e
        .features
        .as_ref()
        .map(|f| f.feature.iter().collect())
        .unwrap_or_default();
    names.sort_by(|a, b| a.0.cmp(b.0));
    for (name, f) in names {
        match &f.kind {
            Some(feature::Kind::FloatList(l)) => out.extend_from_slice(&l.value),
            Some(feature::Kind::Int64List(l)) => out.extend(l.value.iter().map(|&v| v as f32)),
            Some(feature::Kind::BytesList(_)) => {
                return Err(ApiError::new(
                    Code::InvalidArgument,
                    format!("feature {name:?} is bytes; this model takes numbers"),
                ))
            }
            None => {}
        }
    }
    Ok(())
}

/// Rows of floats from the examples of an Input.
pub fn rows(input: Option<&Input>) -> Result<Vec<Vec<f32>>, ApiError> {
    let (examples, context) = match input.and_then(|i| i.kind.as_ref()) {
        Some(input::Kind::ExampleList(l)) => (&l.examples, None),
        Some(input::Kind::ExampleListWithContext(l)) => (&l.examples, l.context.as_ref()),
        None => return Err(ApiError::new(Code::InvalidArgument, "Input is empty")),
    };
    if examples.is_empty() {
        return Err(ApiError::new(Code::InvalidArgument, "Input is empty"));
    }
    examples
        .iter()
        .map(|e| {
            let mut row = Vec::new();
            if let Some(c) = context {
                features(c, &mut row)?;
            }
            features(e, &mut row)?;
            Ok(row)
        })
        .collect()
}

fn single_io(target: &ResolvedModel) -> Result<(String, usize), ApiError> {
    let sig = target.model.signature();
    match (sig.inputs.as_slice(), sig.outputs.len()) {
        ([i], 1..) if i.dtype == DType::F32 && i.shape.len() == 2 => Ok((i.name.clone(), i.shape[1].max(0) as usize)),
        _ => Err(ApiError::new(
            Code::FailedPrecondition,
            "this model's signature does not fit Classify/Regress (one float input [batch, features] is needed); use Predict",
        )),
    }
}

/// Runs the rows through the model; returns the first output.
pub async fn run_rows(
    core: &ServingCore,
    target: &ResolvedModel,
    rows: Vec<Vec<f32>>,
) -> Result<Tensor, ApiError> {
    let (input, width) = single_io(target)?;
    let n = rows.len();
    let mut flat = Vec::with_capacity(n * width);
    for (i, r) in rows.into_iter().enumerate() {
        if width > 0 && r.len() != width {
            return Err(ApiError::new(
                Code::InvalidArgument,
                format!(
                    "example {i} has {} feature values; the model takes {width}",
                    r.len()
                ),
            ));
        }
        flat.extend(r);
    }
    let w = flat.len() / n.max(1);
    let t = Tensor::new(vec![n, w], Data::F32(flat))
        .map_err(|e| ApiError::new(Code::InvalidArgument, e))?;
    let out = core
        .infer(target, "", vec![(input, t)], &[], Entry::Grpc)
        .await?;
    out.into_iter()
        .next()
        .map(|(_, t)| t)
        .ok_or_else(|| ApiError::new(Code::Internal, "no output"))
}

/// Rows, values per row, and the values of a float output.
pub fn scores(t: &Tensor) -> Result<(usize, usize, Vec<f32>), ApiError> {
    let Data::F32(v) = &t.data else {
        return Err(ApiError::new(
            Code::FailedPrecondition,
            "the model's first output is not float",
        ));
    };
    let n = t.shape.first().copied().unwrap_or(1);
    let c = v.len().checked_div(n).unwrap_or(0);
    Ok((n, c, v.clone()))
}

fn spec(t: &ResolvedModel) -> ModelSpec {
    ModelSpec {
        name: t.name.clone(),
        version_choice: Some(
            crate::proto::tensorflow::serving::model_spec::VersionChoice::Version(t.version),
        ),
        signature_name: crate::service::DEFAULT_SIGNATURE.into(),
    }
}

/// gRPC Classify.
pub async fn classify(
    core: &ServingCore,
    req: ClassificationRequest,
) -> Result<ClassificationResponse, ApiError> {
    let target = core.resolve_spec(req.model_spec.as_ref())?;
    let out = run_rows(core, &target, rows(req.input.as_ref())?).await?;
    let (n, c, v) = scores(&out)?;
    let classifications = (0..n)
        .map(|i| Classifications {
            classes: (0..c)
                .map(|k| Class {
                    label: k.to_string(),
                    score: v[i * c + k],
                })
                .collect(),
        })
        .collect();
    Ok(ClassificationResponse {
        model_spec: Some(spec(&target)),
        result: Some(ClassificationResult { classifications }),
    })
}

/// gRPC Regress.
pub async fn regress(
    core: &ServingCore,
    req: RegressionRequest,
) -> Result<RegressionResponse, ApiError> {
    let target = core.resolve_spec(req.model_spec.as_ref())?;
    let out = run_rows(core, &target, rows(req.input.as_ref())?).await?;
    let (n, c, v) = scores(&out)?;
    if c != 1 {
        return Err(ApiError::new(
            Code::FailedPrecondition,
            format!("Regress needs one value per example; the model gives {c}"),
        ));
    }
    Ok(RegressionResponse {
        model_spec: Some(spec(&target)),
        result: Some(RegressionResult {
            regressions: (0..n).map(|i| Regression { value: v[i] }).collect(),
        }),
    })
}
