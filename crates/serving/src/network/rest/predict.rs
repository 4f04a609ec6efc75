//! `:predict`: the row (`instances`) and columnar (`inputs`) formats read straight into tensors
//! where the body allows it, and the outputs written back in the request's format.

use serde_json::{Map, Value};
use tonic::Code;

use super::body::{parse_json, JsonCost};
use super::response::bad;
use crate::api::error::ApiError;
use crate::api::service::{Entry, Reservation, ServingCore};
use teeserve_tensor::{self as tensor, Tensor};
use teeserve_wire::heavy;

/// A Predict body. When the model has one float input and the body carries it as a regular
/// nested list of numbers (`"instances": [[...]]`, `"inputs": [[...]]` or
/// `"inputs": {"<input>": [[...]]}`, the usual image request), that list is read straight into
/// a tensor ([`tensor::from_json_numbers`]) and `null` stands in its place in the object; the
/// tensor is returned beside the object.
/// Whatever else the body holds goes the general way, and any body the direct reading does not
/// fit is read wholly the general way, so errors are the same either way.
///
/// The memory either reading takes is asked of `reserve` first (an upper bound found from the
/// body's bytes), and no tensor larger than `max_bytes` is read.
pub(super) fn parse_predict_body(
    body: &[u8],
    sigs: &crate::engine::Signatures,
    max_bytes: usize,
    reserve: &mut dyn FnMut(usize) -> Result<(), ApiError>,
) -> Result<(Map<String, Value>, Option<Tensor>), ApiError> {
    let cost = JsonCost::of(body);
    reserve(cost.direct())?;
    let direct = || {
        // The object with its values left as text (a repeated key keeps the last, as in the
        // general path).
        let raw = top_level_entries(body)?;
        let sig_name: String = match raw.get("signature_name") {
            Some(v) => serde_json::from_str(v).ok()?,
            None => String::new(),
        };
        let [spec] = sigs.get(&sig_name)?.inputs.as_slice() else {
            return None;
        };
        let keys = ["instances", "inputs"];
        let [(key, value)] = raw
            .iter()
            .filter(|(k, _)| keys.contains(k))
            .collect::<Vec<_>>()[..]
        else {
            return None;
        };
        let text = *value;
        let t = if text.starts_with('{') {
            // "inputs": {"<the input>": [[...]]}, read without a second pass over the list.
            let (name, list) = single_entry(text).filter(|_| *key == "inputs")?;
            if name != spec.name || name == "b64" {
                return None;
            }
            tensor::from_json_numbers_within(list, spec.dtype, max_bytes)?
        } else {
            tensor::from_json_numbers_within(text, spec.dtype, max_bytes)?
        };
        let mut m = Map::new();
        for (k, v) in &raw {
            let v = if k == key {
                Value::Null
            } else {
                serde_json::from_str(v).ok()?
            };
            m.insert((*k).to_owned(), v);
        }
        Some((m, t))
    };
    match direct() {
        Some((m, d)) => Ok((m, Some(d))),
        None => {
            reserve(cost.tree().saturating_sub(cost.direct()))?;
            Ok((parse_json(body)?, None))
        }
    }
}

/// What a Predict body asks for ([`predict_inputs`]).
#[derive(Debug)]
pub struct PredictBody {
    /// The body was in the row format (`instances`).
    pub row: bool,
    /// The signature name it asked for (empty: the default).
    pub signature_name: String,
    /// The input tensors by name.
    pub inputs: Vec<(String, Tensor)>,
}

/// The inputs a Predict body carries for a model of this signature, as the REST API reads
/// them, none larger than what is left of `max_bytes`. `reserve` is asked for the memory
/// reading the body takes before it is taken.
pub fn predict_inputs(
    body: &[u8],
    signatures: &crate::engine::Signatures,
    max_bytes: usize,
    reserve: &mut dyn FnMut(usize) -> Result<(), ApiError>,
) -> Result<PredictBody, ApiError> {
    let (m, direct) = parse_predict_body(body, signatures, max_bytes, reserve)?;
    let sig_name = match m.get("signature_name") {
        None => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err(bad("'signature_name' key must be a string value.")),
    };
    let sig = crate::api::service::lookup_signature(signatures, &sig_name, Entry::Rest)?;
    let (row, inputs) = match (m.get("instances"), m.get("inputs"), direct) {
        (Some(_), Some(_), _) => return Err(bad(
            "Not formatted correctly expecting only one of 'inputs' or 'instances' keys to exist",
        )),
        (None, None, _) => return Err(bad("Missing 'inputs' or 'instances' key")),
        (inst, _, Some(t)) => (inst.is_some(), vec![(sig.inputs[0].name.clone(), t)]),
        (Some(inst), None, None) => (true, row_inputs(sig, inst, max_bytes)?),
        (None, Some(inp), None) => (false, columnar_inputs(sig, inp, max_bytes)?),
    };
    Ok(PredictBody {
        row,
        signature_name: sig_name,
        inputs,
    })
}

/// The entries of a JSON object at the top level of `body`, each value as its text (without
/// the whitespace around it), a repeated key keeping the last; `None` unless the object is
/// plainly written: UTF-8, keys without escapes or control characters, nesting within 126 (the object itself and serde_json's limit of 128 above it).
/// Only the object's structure is checked here; each value's text is read by a strict reader
/// afterwards (serde_json, or the numbers' own scanner), and a body this refuses or that they
/// refuse is read the general way. One pass over the bytes, where serde_json's reading of the
/// object into raw values took three times the instructions.
fn top_level_entries(body: &[u8]) -> Option<std::collections::BTreeMap<&str, &str>> {
    let text = std::str::from_utf8(body).ok()?;
    let b = text.as_bytes();
    let ws = |mut i: usize| {
        while matches!(b.get(i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            i += 1;
        }
        i
    };
    let mut out = std::collections::BTreeMap::new();
    let mut i = ws(0);
    if b.get(i) != Some(&b'{') {
        return None;
    }
    i = ws(i + 1);
    if b.get(i) == Some(&b'}') {
        i += 1;
    } else {
        loop {
            if b.get(i) != Some(&b'"') {
                return None;
            }
            let start = i + 1;
            let len = b
                .get(start..)?
                .iter()
                .position(|&c| c == b'"' || c == b'\\' || c < 0x20)?;
            if b[start + len] != b'"' {
                return None;
            }
            let key = &text[start..start + len];
            i = ws(start + len + 1);
            if b.get(i) != Some(&b':') {
                return None;
            }
            i = ws(i + 1);
            let end = json_value_end(b, i)?;
            out.insert(key, &text[i..end]);
            i = ws(end);
            match b.get(i)? {
                b',' => i = ws(i + 1),
                b'}' => {
                    i += 1;
                    break;
                }
                _ => return None,
            }
        }
    }
    (ws(i) == b.len()).then_some(out)
}

/// Where the JSON value that starts at `i` ends: after its closing quote or bracket (strings
/// inside skipped whole, escapes included), or, for a number, `true`, `false` or `null`, at
/// the first delimiter. `None` when it does not end or nests deeper than 126.
fn json_value_end(b: &[u8], i: usize) -> Option<usize> {
    let string_end = |mut j: usize| {
        j += 1;
        while j < b.len() {
            match b[j] {
                b'\\' => j += 2,
                b'"' => return Some(j + 1),
                _ => j += 1,
            }
        }
        None
    };
    match b.get(i)? {
        b'"' => string_end(i),
        b'[' | b'{' => {
            let mut depth = 0usize;
            let mut j = i;
            while j < b.len() {
                match b[j] {
                    b'"' => {
                        j = string_end(j)?;
                        continue;
                    }
                    b'[' | b'{' => {
                        depth += 1;
                        if depth > 126 {
                            return None;
                        }
                    }
                    b']' | b'}' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(j + 1);
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
            None
        }
        _ => {
            let len = b[i..]
                .iter()
                .position(|&c| matches!(c, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r'))
                .unwrap_or(b.len() - i);
            (len > 0).then_some(i + len)
        }
    }
}

/// The key and the value's text of a JSON object's text that might hold one entry, when the key
/// has no escapes. The value's text runs to the closing brace, so that with more entries it
/// holds their text too and will not read as one value.
pub(super) fn single_entry(object: &str) -> Option<(&str, &str)> {
    let inner = object.strip_prefix('{')?.strip_suffix('}')?.trim_start();
    let quoted = inner.strip_prefix('"')?;
    let end = quoted.find('"')?;
    let name = &quoted[..end];
    if name.contains('\\') {
        return None;
    }
    Some((
        name,
        quoted[end + 1..]
            .trim_start()
            .strip_prefix(':')?
            .trim_start(),
    ))
}

pub(super) async fn predict(
    core: &ServingCore,
    name: &str,
    version: Option<i64>,
    label: Option<&str>,
    body: &[u8],
) -> Result<String, ApiError> {
    let target = core.resolve(name, version, label)?;
    let mut held = Reservation::default();
    // Parsed, and the answer written, aside from the I/O threads when large (heavy).
    let PredictBody {
        row,
        signature_name: sig_name,
        inputs,
    } = heavy::run(body.len(), || {
        predict_inputs(
            body,
            target.model.signatures(),
            core.options.max_tensor_bytes,
            &mut |bytes| {
                held.merge(core.reserve(bytes, "reading the request's JSON")?);
                Ok(())
            },
        )
    })?;
    let outputs = core
        .infer(&target, &sig_name, inputs, &[], Entry::Rest)
        .await?;
    let bytes = outputs.iter().map(|(_, t)| t.data_bytes()).sum();
    heavy::run(bytes, || write_answer(&outputs, row))
}

/// The JSON answer of Predict: rows (`predictions`) or columns (`outputs`).
fn write_answer(outputs: &[(String, Tensor)], row: bool) -> Result<String, ApiError> {
    // Room for what the answer usually takes (a float32 is at most 15 characters, its
    // separator 2), so that it is written without growing; a longer answer (float64s, strings)
    // grows past that.
    let elements: usize = outputs.iter().map(|(_, t)| t.len()).sum();
    let mut s = String::with_capacity(elements.saturating_mul(18).saturating_add(64).min(1 << 20));
    if row {
        let n = outputs
            .first()
            .and_then(|(_, t)| t.shape.first().copied())
            .unwrap_or(0);
        for (name, t) in outputs {
            if t.shape.first() != Some(&n) {
                return Err(ApiError::new(
                    Code::InvalidArgument,
                    format!("Tensor name: {name} has inconsistent batch size"),
                ));
            }
        }
        s.push_str("{\n    \"predictions\": [");
        for i in 0..n {
            s.push_str(if i == 0 { "" } else { ", " });
            write_outputs(outputs, Some(i), &mut s);
        }
        s.push_str("]\n}");
    } else {
        s.push_str("{\n    \"outputs\": ");
        write_outputs(outputs, None, &mut s);
        s.push_str("\n}");
    }
    Ok(s)
}

/// Writes one output as its value, or several as an object keyed by alias (TF Serving's rule);
/// `row` selects one row of each. Aliases ending in `_bytes` are written as `{"b64": ...}`.
pub(super) fn write_outputs(outputs: &[(String, Tensor)], row: Option<usize>, s: &mut String) {
    if let [(name, t)] = outputs {
        tensor::write_json(t, row, name.ends_with("_bytes"), s);
        return;
    }
    s.push('{');
    for (k, (name, t)) in outputs.iter().enumerate() {
        if k > 0 {
            s.push_str(", ");
        }
        tensor::write_json_string(name, s);
        s.push_str(": ");
        tensor::write_json(t, row, name.ends_with("_bytes"), s);
    }
    s.push('}');
}

/// Reads one input into a tensor of at most what is `left` of a request's tensor bytes.
pub(super) fn json_input(
    v: &Value,
    spec: &crate::engine::TensorSpec,
    left: &mut usize,
) -> Result<Tensor, ApiError> {
    let t = tensor::from_json_within(v, spec.dtype, *left).map_err(|e| {
        if matches!(e, tensor::TensorError::TooLarge(_)) {
            bad(format!(
                "input {}: {e} (--max_request_tensor_bytes)",
                spec.name
            ))
        } else {
            bad(e.to_string())
        }
    })?;
    *left -= t.len() * spec.dtype.element_bytes()
        + match &t.data {
            teeserve_tensor::Data::Str(v) => v.iter().map(Vec::len).sum(),
            _ => 0,
        };
    Ok(t)
}

pub(super) fn row_inputs(
    sig: &crate::engine::Signature,
    inst: &Value,
    max: usize,
) -> Result<Vec<(String, Tensor)>, ApiError> {
    let mut left = max;
    let list = match inst {
        Value::Array(a) if !a.is_empty() => a,
        _ => return Err(bad("Expecting 'instances' to be an list/array")),
    };
    let objects = list.iter().all(Value::is_object)
        && list
            .iter()
            .all(|o| o.get("b64").is_none() || o.as_object().is_some_and(|m| m.len() > 1));
    if sig.inputs.len() > 1 || objects {
        let mut out = Vec::new();
        for spec in &sig.inputs {
            let mut col = Vec::with_capacity(list.len());
            for (i, o) in list.iter().enumerate() {
                let o = o.as_object().ok_or_else(|| {
                    bad(format!(
                        "Expecting object at instances[{i}] since the signature has {} inputs",
                        sig.inputs.len()
                    ))
                })?;
                if o.len() != sig.inputs.len() {
                    return Err(bad(format!(
                        "instances[{i}] has {} keys; the signature has {} inputs",
                        o.len(),
                        sig.inputs.len()
                    )));
                }
                col.push(o.get(&spec.name).cloned().ok_or_else(|| {
                    bad(format!("instances[{i}] is missing input {}", spec.name))
                })?);
            }
            let t = json_input(&Value::Array(col), spec, &mut left)?;
            out.push((spec.name.clone(), t));
        }
        return Ok(out);
    }
    let spec = sig
        .inputs
        .first()
        .ok_or_else(|| bad("the model has no inputs"))?;
    Ok(vec![(
        spec.name.clone(),
        json_input(inst, spec, &mut left)?,
    )])
}

pub(super) fn columnar_inputs(
    sig: &crate::engine::Signature,
    inp: &Value,
    max: usize,
) -> Result<Vec<(String, Tensor)>, ApiError> {
    let mut left = max;
    match inp {
        Value::Object(m) if m.get("b64").is_none() || m.len() > 1 => {
            let mut out = Vec::new();
            for spec in &sig.inputs {
                let v = m.get(&spec.name).ok_or_else(|| {
                    bad(format!(
                        "Missing named input: {} in 'inputs' object.",
                        spec.name
                    ))
                })?;
                out.push((spec.name.clone(), json_input(v, spec, &mut left)?));
            }
            for k in m.keys() {
                if !sig.inputs.iter().any(|s| &s.name == k) {
                    // Only the name matters: order_inputs reports it as "Sent extra".
                    out.push((
                        k.clone(),
                        Tensor {
                            shape: vec![0],
                            data: teeserve_tensor::Data::F32(vec![]),
                        },
                    ));
                }
            }
            Ok(out)
        }
        v => {
            if sig.inputs.len() != 1 {
                return Err(bad(format!(
                    "Expecting an object of {} named inputs in 'inputs'",
                    sig.inputs.len()
                )));
            }
            let spec = &sig.inputs[0];
            Ok(vec![(spec.name.clone(), json_input(v, spec, &mut left)?)])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_top_level_entries_are_those_serde_json_reads() {
        let bodies: &[&str] = &[
            r#"{"instances": [[1, 2.5, -3e2]]}"#,
            " {\n\t\"signature_name\" : \"serving_default\" ,\"inputs\":{\"x\": [[1]]} } \r\n",
            r#"{"a": "b}\"]", "c": {"d": ["}", "]"]}, "e": null, "f": true, "g": -0.5}"#,
            r#"{"instances": [1], "instances": [[2]]}"#,
            r#"{}"#,
            r#"{"é": "ü", "x": "\u00e9"}"#,
        ];
        for body in bodies {
            let ours = top_level_entries(body.as_bytes()).unwrap_or_else(|| panic!("{body}"));
            let theirs: std::collections::BTreeMap<String, &serde_json::value::RawValue> =
                serde_json::from_str(body).unwrap();
            let theirs: std::collections::BTreeMap<&str, &str> =
                theirs.iter().map(|(k, v)| (k.as_str(), v.get())).collect();
            assert_eq!(ours, theirs, "{body}");
        }
        // Not plainly written, or not an object: read the general way.
        for body in [
            &br#"{"a\"b": 1}"#[..],
            br#"{"a\u0062": 1}"#,
            b"{\"a\x01\": 1}",
            br#"{"a": 1} x"#,
            br#"{"a": 1,}"#,
            br#"{"a" 1}"#,
            br#"{"a": }"#,
            br#"{"a": [1, 2}"#,
            br#"{"a": "open}"#,
            br#"[1]"#,
            b"{\"a\": \xff}",
            br#"{"a": 1"#,
        ] {
            assert_eq!(
                top_level_entries(body),
                None,
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        let deep = format!(r#"{{"a": {}{}}}"#, "[".repeat(200), "]".repeat(200));
        assert_eq!(top_level_entries(deep.as_bytes()), None);
    }

    #[test]
    fn single_entry_reads_one_plain_key() {
        assert_eq!(
            single_entry(r#"{"pixels": [[1, 2]]}"#),
            Some(("pixels", "[[1, 2]]"))
        );
        assert_eq!(single_entry(r#"{ "x" :[1] }"#), Some(("x", "[1] ")));
        // More entries stay in the value's text, which then is not one list.
        let (_, rest) = single_entry(r#"{"a": [1], "b": [2]}"#).unwrap();
        assert!(tensor::from_json_numbers(rest, teeserve_tensor::DType::F32).is_none());
        assert_eq!(single_entry(r#"{"a\"b": [1]}"#), None);
        assert_eq!(single_entry(r#"{"a\u0062": [1]}"#), None);
        assert_eq!(single_entry("[1]"), None);
        assert_eq!(single_entry("{}"), None);
    }

    #[test]
    fn outputs_are_keyed_by_their_aliases_written_as_json_strings() {
        let t = |x: f32| Tensor {
            shape: vec![1, 1],
            data: teeserve_tensor::Data::F32(vec![x]),
        };
        let outputs = vec![
            ("plain".to_owned(), t(1.0)),
            ("a\"b\\c\n".to_owned(), t(2.0)),
        ];
        let mut s = String::new();
        write_outputs(&outputs, Some(0), &mut s);
        assert_eq!(s, r#"{"plain": [1.0], "a\"b\\c\n": [2.0]}"#);
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(v["a\"b\\c\n"], serde_json::json!([2.0]));
    }
}
