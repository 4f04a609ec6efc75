//! Classify and Regress.
//!
//! A signature whose method is `tensorflow/serving/classify` or `.../regress` (a SavedModel's
//! classification and regression signatures) runs as TF Serving runs it: its one DT_STRING
//! input takes the serialized tf.Examples (a context's bytes followed by each example's, which
//! protobuf reads as the two merged), and its outputs `classes` / `scores` or `outputs` give
//! the results (tensorflow_serving/servables/tensorflow/classifier.cc, regressor.cc).
//!
//! Other models fit when their default signature has one float input `[batch, F]` and one
//! float output, `[batch, C]` class scores (classify) or `[batch]` / `[batch, 1]` values
//! (regress). Each tf.Example becomes one row: its features (context first) in name order,
//! float and int64 values as floats.

use tonic::Code;

use crate::api::error::ApiError;
use crate::api::service::{Entry, ServingCore};
use crate::engine::Signature;
use crate::models::ResolvedModel;
use teeserve_tensor::{DType, Data, Tensor};
use teeserve_wire::tensorflow::serving::{
    input, Class, ClassificationRequest, ClassificationResponse, ClassificationResult,
    Classifications, Input, ModelSpec, Regression, RegressionRequest, RegressionResponse,
    RegressionResult,
};
use teeserve_wire::tensorflow::{feature, Example};

fn features(e: &Example, out: &mut Vec<f32>) -> Result<(), ApiError> {
    let mut names: Vec<(&String, &teeserve_wire::tensorflow::Feature)> = e
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

/// The number of feature values of an example, counted without copying any.
fn values_in(e: &Example) -> usize {
    e.features.as_ref().map_or(0, |f| {
        f.feature
            .values()
            .map(|f| match &f.kind {
                Some(feature::Kind::FloatList(l)) => l.value.len(),
                Some(feature::Kind::Int64List(l)) => l.value.len(),
                Some(feature::Kind::BytesList(l)) => l.value.len(),
                None => 0,
            })
            .sum()
    })
}

/// Checks what the examples take once each carries its own copy of the context (`context`
/// bytes, and `each` bytes of its own), before any copy is made: a request of a few bytes per
/// example beside one large context would otherwise multiply into far more memory than it
/// took to send.
pub fn check_merged(
    context: usize,
    each: impl Iterator<Item = usize>,
    max_bytes: usize,
) -> Result<(), ApiError> {
    let mut total = 0usize;
    for bytes in each {
        total = total.saturating_add(context.saturating_add(bytes));
        if total > max_bytes {
            return Err(ApiError::new(
                Code::InvalidArgument,
                format!(
                    "the examples take more than {max_bytes} bytes once the context ({context} bytes) is merged into each; a request's inputs may take at most {max_bytes} bytes (--max_request_tensor_bytes)"
                ),
            ));
        }
    }
    Ok(())
}

/// Rows of floats from the examples of an Input, at most `max_bytes` of them in all.
pub fn rows(input: Option<&Input>, max_bytes: usize) -> Result<Vec<Vec<f32>>, ApiError> {
    let (examples, context) = match input.and_then(|i| i.kind.as_ref()) {
        Some(input::Kind::ExampleList(l)) => (&l.examples, None),
        Some(input::Kind::ExampleListWithContext(l)) => (&l.examples, l.context.as_ref()),
        None => return Err(ApiError::new(Code::InvalidArgument, "Input is empty")),
    };
    if examples.is_empty() {
        return Err(ApiError::new(Code::InvalidArgument, "Input is empty"));
    }
    let mut shared = Vec::new();
    if let Some(c) = context {
        features(c, &mut shared)?;
    }
    let float = std::mem::size_of::<f32>();
    check_merged(
        shared.len() * float,
        examples.iter().map(|e| values_in(e).saturating_mul(float)),
        max_bytes,
    )?;
    examples
        .iter()
        .map(|e| {
            let mut row = shared.clone();
            features(e, &mut row)?;
            Ok(row)
        })
        .collect()
}

fn single_io(target: &ResolvedModel) -> Result<(String, usize), ApiError> {
    let sig = crate::api::service::lookup_signature(target.model.signatures(), "", Entry::Grpc)?;
    match (sig.inputs.as_slice(), sig.outputs.len()) {
        ([i], 1..) if i.dtype == DType::F32 && i.shape.len() == 2 => Ok((i.name.clone(), i.shape[1].max(0) as usize)),
        _ => Err(ApiError::new(
            Code::FailedPrecondition,
            "this model's signature does not fit Classify/Regress (one float input [batch, features] is needed); use Predict",
        )),
    }
}

/// The rows as one `[rows, width]` float tensor; each row must have `width` values (0: any
/// number, the same in every row).
pub(crate) fn rows_tensor(rows: Vec<Vec<f32>>, width: usize) -> Result<Tensor, ApiError> {
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
    Tensor::new(vec![n, w], Data::F32(flat)).map_err(ApiError::from)
}

/// Runs the rows through the model; returns the first output.
pub(crate) async fn run_rows(
    core: &ServingCore,
    target: &ResolvedModel,
    rows: Vec<Vec<f32>>,
) -> Result<Tensor, ApiError> {
    let (input, width) = single_io(target)?;
    let t = rows_tensor(rows, width)?;
    let out = core
        .infer(target, "", vec![(input, t)], &[], Entry::Grpc)
        .await?;
    out.into_iter()
        .next()
        .map(|(_, t)| t)
        .ok_or_else(|| ApiError::new(Code::Internal, "no output"))
}

/// Rows, values per row, and the values of a float output.
pub(crate) fn scores(t: &Tensor) -> Result<(usize, usize, Vec<f32>), ApiError> {
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

fn spec(t: &ResolvedModel, sig_name: &str) -> ModelSpec {
    ModelSpec {
        name: t.name.clone(),
        version_choice: Some(
            teeserve_wire::tensorflow::serving::model_spec::VersionChoice::Version(t.version),
        ),
        signature_name: if sig_name.is_empty() {
            crate::api::service::DEFAULT_SIGNATURE.into()
        } else {
            sig_name.into()
        },
    }
}

/// The method name of a classification signature.
pub(crate) const CLASSIFY_METHOD: &str = "tensorflow/serving/classify";
/// The method name of a regression signature.
pub(crate) const REGRESS_METHOD: &str = "tensorflow/serving/regress";

/// The serialized tf.Examples of an Input, the context's bytes before each example's, at most
/// `max_bytes` of them in all.
pub fn serialized_examples(
    input: Option<&Input>,
    max_bytes: usize,
) -> Result<Vec<Vec<u8>>, ApiError> {
    use prost::Message as _;
    let (examples, context) = match input.and_then(|i| i.kind.as_ref()) {
        Some(input::Kind::ExampleList(l)) => (&l.examples, None),
        Some(input::Kind::ExampleListWithContext(l)) => (&l.examples, l.context.as_ref()),
        None => return Err(ApiError::new(Code::InvalidArgument, "Input is empty")),
    };
    if examples.is_empty() {
        return Err(ApiError::new(Code::InvalidArgument, "Input is empty"));
    }
    let context = context.map(|c| c.encode_to_vec()).unwrap_or_default();
    check_merged(
        context.len(),
        examples.iter().map(|e| e.encoded_len()),
        max_bytes,
    )?;
    Ok(examples
        .iter()
        .map(|e| {
            let mut b = context.clone();
            b.extend_from_slice(&e.encode_to_vec());
            b
        })
        .collect())
}

impl ResolvedModel {
    fn method_of(&self, signature: &str) -> Option<&str> {
        self.model.signatures().method(signature)
    }
}

/// Runs signature `sig_name` of `target`, a classification or regression signature, on the
/// examples; gives its outputs by alias.
async fn run_examples(
    core: &ServingCore,
    target: &ResolvedModel,
    sig_name: &str,
    input: Option<&Input>,
    entry: Entry,
) -> Result<Vec<(String, Tensor)>, ApiError> {
    let serialized = serialized_examples(input, core.options.max_tensor_bytes)?;
    let sig = crate::api::service::lookup_signature(target.model.signatures(), sig_name, entry)?;
    let (name, t) = examples_tensor(sig, serialized)?;
    core.infer(target, sig_name, vec![(name, t)], &[], entry)
        .await
}

/// The one input of a classification or regression signature `sig`, named, holding the
/// serialized examples as a DT_STRING vector.
pub(crate) fn examples_tensor(
    sig: &Signature,
    serialized: Vec<Vec<u8>>,
) -> Result<(String, Tensor), ApiError> {
    let [spec] = sig.inputs.as_slice() else {
        return Err(ApiError::new(
            Code::InvalidArgument,
            "Expected one input Tensor.",
        ));
    };
    if spec.dtype != DType::Str {
        return Err(ApiError::new(
            Code::InvalidArgument,
            "Input tensor must be of type DT_STRING (serialized tf.Examples)",
        ));
    }
    let n = serialized.len();
    let t = Tensor::new(vec![n], Data::Str(serialized)).map_err(ApiError::from)?;
    Ok((spec.name.clone(), t))
}

fn output<'a>(outs: &'a [(String, Tensor)], name: &str) -> Option<&'a Tensor> {
    outs.iter().find(|(n, _)| n == name).map(|(_, t)| t)
}

/// The classifications of a classification signature's outputs `classes` and `scores`.
pub(crate) fn classifications(
    outs: &[(String, Tensor)],
    n: usize,
) -> Result<Vec<Classifications>, ApiError> {
    let bad = |m: String| ApiError::new(Code::InvalidArgument, m);
    let classes = match output(outs, "classes").map(|t| &t.data) {
        Some(Data::Str(v)) => Some(v),
        Some(_) => return Err(bad("Expected classes Tensor of DT_STRING.".into())),
        None => None,
    };
    let scores = match output(outs, "scores").map(|t| &t.data) {
        Some(Data::F32(v)) => Some(v),
        Some(_) => return Err(bad("Expected scores Tensor of DT_FLOAT.".into())),
        None => None,
    };
    let k = classes
        .map(Vec::len)
        .or(scores.map(Vec::len))
        .unwrap_or(0)
        .checked_div(n)
        .unwrap_or(0);
    for len in [classes.map(Vec::len), scores.map(Vec::len)]
        .into_iter()
        .flatten()
    {
        if len != n * k {
            return Err(bad(format!(
                "outputs of {len} values for {n} examples of {k} classes"
            )));
        }
    }
    Ok((0..n)
        .map(|i| Classifications {
            classes: (0..k)
                .map(|j| Class {
                    label: classes
                        .map(|c| String::from_utf8_lossy(&c[i * k + j]).into_owned())
                        .unwrap_or_default(),
                    score: scores.map(|s| s[i * k + j]).unwrap_or_default(),
                })
                .collect(),
        })
        .collect())
}

/// The regressions of a regression signature's output `outputs`.
pub(crate) fn regressions(
    outs: &[(String, Tensor)],
    n: usize,
) -> Result<Vec<Regression>, ApiError> {
    match output(outs, "outputs").map(|t| &t.data) {
        Some(Data::F32(v)) if v.len() == n => {
            Ok(v.iter().map(|&value| Regression { value }).collect())
        }
        Some(Data::F32(v)) => Err(ApiError::new(
            Code::InvalidArgument,
            format!("{} regression values for {n} examples", v.len()),
        )),
        _ => Err(ApiError::new(
            Code::InvalidArgument,
            "Expected output Tensor of DT_FLOAT.",
        )),
    }
}

fn examples_in(input: Option<&Input>) -> usize {
    match input.and_then(|i| i.kind.as_ref()) {
        Some(input::Kind::ExampleList(l)) => l.examples.len(),
        Some(input::Kind::ExampleListWithContext(l)) => l.examples.len(),
        None => 0,
    }
}

/// Classify on `input`: the signature `sig_name` when it is a classification signature,
/// otherwise the rows rule of ONNX models.
pub(crate) async fn classify_input(
    core: &ServingCore,
    target: &ResolvedModel,
    sig_name: &str,
    input: Option<&Input>,
    entry: Entry,
) -> Result<Vec<Classifications>, ApiError> {
    if target.method_of(sig_name) == Some(CLASSIFY_METHOD) {
        let outs = run_examples(core, target, sig_name, input, entry).await?;
        return classifications(&outs, examples_in(input));
    }
    let out = run_rows(core, target, rows(input, core.options.max_tensor_bytes)?).await?;
    let (n, c, v) = scores(&out)?;
    Ok((0..n)
        .map(|i| Classifications {
            classes: (0..c)
                .map(|k| Class {
                    label: k.to_string(),
                    score: v[i * c + k],
                })
                .collect(),
        })
        .collect())
}

/// Regress on `input`: the signature `sig_name` when it is a regression signature, otherwise
/// the rows rule of ONNX models.
pub(crate) async fn regress_input(
    core: &ServingCore,
    target: &ResolvedModel,
    sig_name: &str,
    input: Option<&Input>,
    entry: Entry,
) -> Result<Vec<Regression>, ApiError> {
    if target.method_of(sig_name) == Some(REGRESS_METHOD) {
        let outs = run_examples(core, target, sig_name, input, entry).await?;
        return regressions(&outs, examples_in(input));
    }
    let out = run_rows(core, target, rows(input, core.options.max_tensor_bytes)?).await?;
    let (n, c, v) = scores(&out)?;
    if c != 1 {
        return Err(ApiError::new(
            Code::FailedPrecondition,
            format!("Regress needs one value per example; the model gives {c}"),
        ));
    }
    Ok((0..n).map(|i| Regression { value: v[i] }).collect())
}

/// The signature a gRPC request names (empty: the default).
fn signature_name(spec: Option<&ModelSpec>) -> String {
    spec.map(|s| s.signature_name.clone()).unwrap_or_default()
}

/// gRPC Classify.
pub(crate) async fn classify(
    core: &ServingCore,
    req: ClassificationRequest,
) -> Result<ClassificationResponse, ApiError> {
    let target = core.resolve_spec(req.model_spec.as_ref())?;
    let sig_name = signature_name(req.model_spec.as_ref());
    let classifications =
        classify_input(core, &target, &sig_name, req.input.as_ref(), Entry::Grpc).await?;
    Ok(ClassificationResponse {
        model_spec: Some(spec(&target, &sig_name)),
        result: Some(ClassificationResult { classifications }),
    })
}

/// gRPC Regress.
pub(crate) async fn regress(
    core: &ServingCore,
    req: RegressionRequest,
) -> Result<RegressionResponse, ApiError> {
    let target = core.resolve_spec(req.model_spec.as_ref())?;
    let sig_name = signature_name(req.model_spec.as_ref());
    let regressions =
        regress_input(core, &target, &sig_name, req.input.as_ref(), Entry::Grpc).await?;
    Ok(RegressionResponse {
        model_spec: Some(spec(&target, &sig_name)),
        result: Some(RegressionResult { regressions }),
    })
}
