//! A request's inputs against a model's signature: what each declares (dtype, shape, decoded
//! size) checked before anything is decoded, then decoded, then put in the signature's order.

use tonic::Code;

use crate::api::error::ApiError;
use crate::engine::Signature;
use teeserve_tensor::{self as tensor, DType, Tensor};

/// Checks what each TensorProto of a Predict request declares (dtype, shape, decoded size)
/// against the signature and `max_bytes` for all inputs together, without decoding any; gives
/// the bytes the inputs will take. Inputs the signature does not name are left to
/// [`order_inputs`], which names them.
pub fn check_declared(
    sig: &Signature,
    inputs: &std::collections::HashMap<String, teeserve_wire::tensorflow::TensorProto>,
    max_bytes: usize,
) -> Result<usize, ApiError> {
    let mut total = 0usize;
    for (name, tp) in inputs {
        let d = tensor::declared(tp)
            .map_err(|e| ApiError::new(Code::InvalidArgument, format!("input {name}: {e}")))?;
        let Some((i, spec)) = sig.inputs.iter().enumerate().find(|(_, s)| &s.name == name) else {
            continue;
        };
        check_input(i, spec, d.dtype, &d.shape)?;
        total = total.saturating_add(d.bytes);
        if total > max_bytes {
            return Err(ApiError::new(
                Code::InvalidArgument,
                format!(
                    "input {name}: shape {:?} of {} takes {} bytes decoded; a request's inputs may take at most {max_bytes} bytes (--max_request_tensor_bytes)",
                    d.shape,
                    d.dtype.tf_name(),
                    d.bytes
                ),
            ));
        }
    }
    Ok(total)
}

/// Decodes the inputs of a Predict request that [`check_declared`] has passed; an input the
/// signature does not name becomes an empty placeholder (only its name matters).
pub fn decode_inputs(
    sig: &Signature,
    inputs: &std::collections::HashMap<String, teeserve_wire::tensorflow::TensorProto>,
    max_bytes: usize,
) -> Result<Vec<(String, Tensor)>, ApiError> {
    let mut out = Vec::with_capacity(inputs.len());
    for (name, tp) in inputs {
        let t = if sig.inputs.iter().any(|s| &s.name == name) {
            Tensor::from_proto_within(tp, max_bytes)
                .map_err(|e| ApiError::new(Code::InvalidArgument, format!("input {name}: {e}")))?
        } else {
            Tensor {
                shape: vec![0],
                data: teeserve_tensor::Data::F32(vec![]),
            }
        };
        out.push((name.clone(), t));
    }
    Ok(out)
}

/// Puts inputs in signature order, checking names, dtypes and fixed dimensions.
pub fn order_inputs(
    sig: &Signature,
    mut inputs: Vec<(String, Tensor)>,
) -> Result<Vec<Tensor>, ApiError> {
    let expected = |n: &str| sig.inputs.iter().any(|s| s.name == n);
    let sent = |n: &str| inputs.iter().any(|(m, _)| m == n);
    if inputs.len() != sig.inputs.len()
        || !inputs.iter().all(|(n, _)| expected(n))
        || !sig.inputs.iter().all(|s| sent(&s.name))
    {
        return Err(names_mismatch(sig, &inputs));
    }
    // The signature's names, each once: put in its order. Sent in that order (the usual
    // request), the sort only compares them; it allocates nothing either way.
    inputs.sort_unstable_by_key(|(n, _)| sig.inputs.iter().position(|s| s.name == *n));
    inputs
        .into_iter()
        .zip(&sig.inputs)
        .enumerate()
        .map(|(i, ((_, t), spec))| {
            check_input(i, spec, t.dtype(), &t.shape)?;
            Ok(t)
        })
        .collect()
}

/// TF Serving's error for inputs whose names are not the signature's.
fn names_mismatch(sig: &Signature, inputs: &[(String, Tensor)]) -> ApiError {
    let sent: Vec<&str> = inputs.iter().map(|(n, _)| n.as_str()).collect();
    let expected: Vec<&str> = sig.inputs.iter().map(|s| s.name.as_str()).collect();
    let extra: Vec<&str> = sent
        .iter()
        .copied()
        .filter(|n| !expected.contains(n))
        .collect();
    let missing: Vec<&str> = expected
        .iter()
        .copied()
        .filter(|n| !sent.contains(n))
        .collect();
    ApiError::new(
        Code::InvalidArgument,
        format!(
            "input size does not match signature: {}!={} len({}) != len({}). Sent extra: {}. Missing but required: {}.",
            sent.len(),
            expected.len(),
            set_str(&sent),
            set_str(&expected),
            set_str(&extra),
            set_str(&missing)
        ),
    )
}

/// Checks an input's dtype and shape against its signature entry (`i`: its place there).
pub(crate) fn check_input(
    i: usize,
    spec: &crate::engine::TensorSpec,
    dtype: DType,
    shape: &[usize],
) -> Result<(), ApiError> {
    if dtype != spec.dtype {
        return Err(ApiError::new(
            Code::InvalidArgument,
            format!(
                "Expects arg[{i}] to be {} but {} is provided",
                spec.dtype.short(),
                dtype.short()
            ),
        ));
    }
    let fits = spec.shape.len() == shape.len()
        && spec
            .shape
            .iter()
            .zip(shape)
            .all(|(&want, &got)| want < 0 || want as usize == got);
    if !spec.shape.is_empty() && !fits {
        return Err(ApiError::new(
            Code::InvalidArgument,
            format!(
                "input {}: shape {:?} does not match the signature's {:?} (-1 = any)",
                spec.name, shape, spec.shape
            ),
        ));
    }
    Ok(())
}

pub(crate) fn set_str(names: &[&str]) -> String {
    format!("{{{}}}", names.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use teeserve_tensor::{Data, TensorSpec};

    fn t(x: f32, dims: usize) -> Tensor {
        Tensor {
            shape: vec![1, dims],
            data: Data::F32(vec![x; dims]),
        }
    }

    #[test]
    fn inputs_come_in_the_signatures_order_whatever_order_they_were_sent_in() {
        let sig = Signature {
            inputs: vec![
                TensorSpec::new("a", DType::F32, &[-1, 2]),
                TensorSpec::new("b", DType::F32, &[-1, 3]),
            ],
            outputs: vec![],
        };
        for sent in [
            vec![("a".to_owned(), t(1.0, 2)), ("b".to_owned(), t(2.0, 3))],
            vec![("b".to_owned(), t(2.0, 3)), ("a".to_owned(), t(1.0, 2))],
        ] {
            let got = order_inputs(&sig, sent).unwrap();
            assert_eq!(got, vec![t(1.0, 2), t(2.0, 3)]);
        }
        // In order, but the second of the wrong shape: named as the signature's second input.
        let e = order_inputs(
            &sig,
            vec![("a".to_owned(), t(1.0, 2)), ("b".to_owned(), t(2.0, 2))],
        )
        .unwrap_err();
        assert!(e.message.starts_with("input b: shape [1, 2]"), "{e:?}");
        let e = order_inputs(&sig, vec![("a".to_owned(), t(1.0, 2))]).unwrap_err();
        assert!(e.message.contains("Missing but required: {b}"), "{e:?}");
    }
}
