//! A requester's input file, as `teeserve predict --input` and `teeserve-load --input` take it:
//! a .npy array, or JSON (a nested list, or a TF Serving REST body with "instances" or
//! "inputs"), made into the tensors the model's signature asks for.

use std::path::Path;

use serde_json::Value;

use teeserve_tensor::{self as tensor, Tensor};
use teeserve_tensor::{Signature, TensorSpec};

/// The input file at `path` as JSON: a .npy array becomes nested lists.
pub fn read_input_file(path: &Path) -> Result<Value, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if bytes.starts_with(b"\x93NUMPY") {
        let t = tensor::from_npy(&bytes).map_err(|e| format!("--input {}: {e}", path.display()))?;
        let mut s = String::new();
        tensor::write_json(&t, None, false, &mut s);
        return serde_json::from_str(&s).map_err(|e| format!("--input {}: {e}", path.display()));
    }
    serde_json::from_slice(&bytes)
        .map_err(|e| format!("--input {} is neither .npy nor JSON: {e}", path.display()))
}

/// The request's tensors from `input`: a TF Serving body ("inputs" or "instances") holding an
/// object by input name, or one array (bare or in such a body) for the model's only input.
pub fn input_tensors(sig: &Signature, input: &Value) -> Result<Vec<(String, Tensor)>, String> {
    let tensor = |v: &Value, s: &TensorSpec| {
        tensor::from_json(v, s.dtype)
            .map(|t| (s.name.clone(), t))
            .map_err(|e| format!("--input: {e}"))
    };
    let one = match input {
        Value::Object(m) if m.contains_key("inputs") || m.contains_key("instances") => {
            let v = m.get("inputs").or_else(|| m.get("instances"));
            if let Some(Value::Object(by_name)) = v {
                return sig
                    .inputs
                    .iter()
                    .map(|s| {
                        let v = by_name
                            .get(&s.name)
                            .ok_or_else(|| format!("--input lacks input {:?}", s.name))?;
                        tensor(v, s)
                    })
                    .collect();
            }
            v.unwrap_or(&Value::Null)
        }
        other => other,
    };
    match &sig.inputs[..] {
        [s] => Ok(vec![tensor(one, s)?]),
        all => Err(format!(
            "the model has {} inputs; give a JSON object with one entry per input",
            all.len()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use teeserve_tensor::DType;

    fn sig(names: &[&str]) -> Signature {
        Signature {
            inputs: names
                .iter()
                .map(|n| TensorSpec {
                    name: (*n).to_owned(),
                    dtype: DType::F32,
                    shape: vec![-1, 2],
                })
                .collect(),
            outputs: Vec::new(),
        }
    }

    #[test]
    fn bodies_and_bare_arrays_give_the_signatures_inputs() {
        let one = sig(&["x"]);
        for input in [
            json!([[1.0, 2.0]]),
            json!({"instances": [[1.0, 2.0]]}),
            json!({"inputs": {"x": [[1.0, 2.0]]}}),
        ] {
            let t = input_tensors(&one, &input).unwrap();
            assert_eq!(t.len(), 1, "{input}");
            assert_eq!((t[0].0.as_str(), &t[0].1.shape[..]), ("x", &[1, 2][..]));
        }
        let two = sig(&["a", "b"]);
        let t = input_tensors(
            &two,
            &json!({"inputs": {"b": [[3.0, 4.0]], "a": [[1.0, 2.0]]}}),
        )
        .unwrap();
        assert_eq!(
            t.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
            ["a", "b"]
        );
    }

    #[test]
    fn what_does_not_fit_the_signature_is_named() {
        let two = sig(&["a", "b"]);
        let e = input_tensors(&two, &json!({"inputs": {"a": [[1.0, 2.0]]}})).unwrap_err();
        assert!(e.contains("lacks input \"b\""), "{e}");
        let e = input_tensors(&two, &json!([[1.0, 2.0]])).unwrap_err();
        assert!(e.contains("the model has 2 inputs"), "{e}");
        let e = input_tensors(&sig(&["x"]), &json!({"instances": "text"})).unwrap_err();
        assert!(e.starts_with("--input: "), "{e}");
    }
}
