//! `:classify` and `:regress`: tf.Examples in TF Serving's JSON form, run by a classification
//! or regression signature, or as rows of floats by a model without one.

use serde_json::{json, Map, Value};
use tonic::Code;

use super::body::{parse_json, JsonCost};
use super::response::bad;
use crate::api::error::ApiError;
use crate::api::service::{Entry, ServingCore};
use crate::models::ResolvedModel;

/// A tf.Example from TF Serving's JSON form of one (util/json_tensor.cc): a float is a
/// float_list value, an integer or a bool an int64_list value, a string or `{"b64": ...}` a
/// bytes_list value; a list holds values of one kind.
pub fn json_example(v: &Value) -> Result<teeserve_wire::tensorflow::Example, ApiError> {
    use teeserve_wire::tensorflow::{feature, BytesList, Feature, Features, FloatList, Int64List};
    let m = v
        .as_object()
        .ok_or_else(|| bad("each example must be a JSON object"))?;
    let mut features = std::collections::HashMap::new();
    for (k, v) in m {
        let values: Vec<&Value> = match v {
            Value::Array(a) => a.iter().collect(),
            x => vec![x],
        };
        let wrong = |x: &Value| bad(format!("feature {k:?}: {x} does not fit its list"));
        let kind = match values.first() {
            None => feature::Kind::FloatList(FloatList { value: vec![] }),
            Some(Value::String(_)) | Some(Value::Object(_)) => {
                feature::Kind::BytesList(BytesList {
                    value: values
                        .iter()
                        .map(|x| match x {
                            Value::String(s) => Ok(s.clone().into_bytes()),
                            Value::Object(o) => match (o.len(), o.get("b64")) {
                                (1, Some(Value::String(b))) => {
                                    use base64::Engine as _;
                                    base64::engine::general_purpose::STANDARD
                                        .decode(b)
                                        .map_err(|e| bad(format!("feature {k:?}: {e}")))
                                }
                                _ => Err(wrong(x)),
                            },
                            _ => Err(wrong(x)),
                        })
                        .collect::<Result<_, _>>()?,
                })
            }
            Some(Value::Number(n)) if n.is_f64() => feature::Kind::FloatList(FloatList {
                value: values
                    .iter()
                    .map(|x| x.as_f64().map(|f| f as f32).ok_or_else(|| wrong(x)))
                    .collect::<Result<_, _>>()?,
            }),
            Some(Value::Number(_)) | Some(Value::Bool(_)) => feature::Kind::Int64List(Int64List {
                value: values
                    .iter()
                    .map(|x| match x {
                        Value::Bool(b) => Ok(i64::from(*b)),
                        x => x.as_i64().ok_or_else(|| wrong(x)),
                    })
                    .collect::<Result<_, _>>()?,
            }),
            Some(x) => return Err(wrong(x)),
        };
        features.insert(k.clone(), Feature { kind: Some(kind) });
    }
    Ok(teeserve_wire::tensorflow::Example {
        features: Some(Features { feature: features }),
    })
}

/// The values of one example in REST's row rule for models without a classification or
/// regression signature: its features in name order, each a number or a list of numbers.
pub fn example_row(v: &Value, out: &mut Vec<f32>) -> Result<(), ApiError> {
    let m = v
        .as_object()
        .ok_or_else(|| bad("each example must be a JSON object"))?;
    let mut keys: Vec<&String> = m.keys().collect();
    keys.sort();
    for k in keys {
        let push = |x: &Value, out: &mut Vec<f32>| -> Result<(), ApiError> {
            out.push(
                x.as_f64()
                    .ok_or_else(|| bad(format!("feature {k:?}: {x} is not a number")))?
                    as f32,
            );
            Ok(())
        };
        match &m[k] {
            Value::Array(a) => a.iter().try_for_each(|x| push(x, out))?,
            x => push(x, out)?,
        }
    }
    Ok(())
}

pub(super) async fn classify_regress(
    core: &ServingCore,
    name: &str,
    version: Option<i64>,
    label: Option<&str>,
    body: &[u8],
    classify: bool,
) -> Result<String, ApiError> {
    let target = core.resolve(name, version, label)?;
    let _tree = core.reserve(JsonCost::of(body).tree(), "reading the request's JSON")?;
    let m = parse_json(body)?;
    let examples = m
        .get("examples")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("Missing 'examples' key"))?;
    let sig_name = match m.get("signature_name") {
        None => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err(bad("'signature_name' key must be a string value.")),
    };
    let method = if classify {
        crate::api::classify::CLASSIFY_METHOD
    } else {
        crate::api::classify::REGRESS_METHOD
    };
    if target.model.signatures().method(&sig_name) == Some(method) {
        // A SavedModel's classification or regression signature: tf.Examples, as TF Serving.
        return examples_signature(core, &target, &sig_name, &m, examples, classify).await;
    }
    // The context's values are read once and copied into each row only after the rows'
    // total is known to fit.
    let mut shared = Vec::new();
    if let Some(c) = m.get("context") {
        example_row(c, &mut shared)?;
    }
    let mut rows = Vec::with_capacity(examples.len());
    for e in examples {
        let mut row = Vec::new();
        example_row(e, &mut row)?;
        rows.push(row);
    }
    let float = std::mem::size_of::<f32>();
    crate::api::classify::check_merged(
        shared.len() * float,
        rows.iter().map(|r| r.len() * float),
        core.options.max_tensor_bytes,
    )?;
    let rows: Vec<Vec<f32>> = rows
        .into_iter()
        .map(|r| shared.iter().copied().chain(r).collect())
        .collect();
    if rows.is_empty() {
        return Err(bad("'examples' is empty"));
    }
    rows_results(core, &target, rows, classify).await
}

/// Classify or Regress by the rows rule (a model without such a signature): the first output's
/// values per row, as TF Serving's JSON results.
async fn rows_results(
    core: &ServingCore,
    target: &ResolvedModel,
    rows: Vec<Vec<f32>>,
    classify: bool,
) -> Result<String, ApiError> {
    let out = crate::api::classify::run_rows(core, target, rows).await?;
    let (n, c, v) = crate::api::classify::scores(&out)?;
    if !classify && c != 1 {
        return Err(ApiError::new(
            Code::FailedPrecondition,
            format!("Regress needs one value per example; the model gives {c}"),
        ));
    }
    let results: Vec<Value> = (0..n)
        .map(|i| {
            if classify {
                Value::Array(
                    (0..c)
                        .map(|k| json!([k.to_string(), v[i * c + k]]))
                        .collect(),
                )
            } else {
                json!(v[i])
            }
        })
        .collect();
    Ok(json!({ "results": results }).to_string())
}

/// Classify or Regress on a classification or regression signature: the JSON examples (and
/// context) as tf.Examples, run as the gRPC request would be.
async fn examples_signature(
    core: &ServingCore,
    target: &ResolvedModel,
    sig_name: &str,
    m: &Map<String, Value>,
    examples: &[Value],
    classify: bool,
) -> Result<String, ApiError> {
    use teeserve_wire::tensorflow::serving::{input, ExampleListWithContext, Input};
    let input = Input {
        kind: Some(input::Kind::ExampleListWithContext(
            ExampleListWithContext {
                examples: examples
                    .iter()
                    .map(json_example)
                    .collect::<Result<_, _>>()?,
                context: m.get("context").map(json_example).transpose()?,
            },
        )),
    };
    let results: Vec<Value> = if classify {
        crate::api::classify::classify_input(core, target, sig_name, Some(&input), Entry::Rest)
            .await?
            .into_iter()
            .map(|c| {
                Value::Array(
                    c.classes
                        .into_iter()
                        .map(|k| json!([k.label, k.score]))
                        .collect(),
                )
            })
            .collect()
    } else {
        crate::api::classify::regress_input(core, target, sig_name, Some(&input), Entry::Rest)
            .await?
            .into_iter()
            .map(|r| json!(r.value))
            .collect()
    };
    Ok(json!({ "results": results }).to_string())
}
