//! The operator policy of SavedModels: which TensorFlow operators a model's serving
//! signatures may reach.
//!
//! A TensorFlow graph is code. Besides computing, its operators can write and read files
//! (`WriteFile`, `ReadFile`, `SaveV2`, readers and datasets), print to the server's log
//! (`PrintV2`, `Print`, `Assert` with its data), write summaries, talk to other processes
//! (collectives, `_Send`), run Python, or keep one request's data in state that a later
//! request reads (variable assignments, queues, mutable tables). Any of those would carry a
//! requester's input out of the TEE, or to another requester, behind an attestation that
//! passed. So a SavedModel loads only if every operator reachable from its serving
//! signatures, through its graph and every function those operators call (the function
//! library), is one that computes: an allowlist ([`COMPUTE_OPS`], policy [`POLICY_NAME`]).
//!
//! The check reads `saved_model.pb` itself (the bytes that were hashed, before TensorFlow sees
//! them): the MetaGraphDef with the serving tags, each signature's tensors, the nodes they
//! depend on (data and control inputs), and, for every reachable node whose operator is a
//! library function or that names functions in its attributes (`f`, `then_branch`, `body`,
//! ...), every node of those functions. Signatures whose names start with `__` (TensorFlow's
//! own init and train ops) are not served and not checked; the init op runs once at load, with
//! no requester's data.
//!
//! An owner who needs more operators widens the policy per model through the broker's
//! admitted-models secret (`"tensorflow_ops": ["..."]`), never by a host flag.

use std::collections::{BTreeSet, HashMap};

use prost::Message as _;

use teeserve_wire::tensorflow::{attr_value, FunctionDef, MetaGraphDef, NodeDef, SavedModel};

pub use super::allowlist::{is_compute, COMPUTE_OPS, POLICY_NAME};

/// The largest `saved_model.pb` read (TensorFlow itself refuses protos over 2 GiB).
pub const MAX_SAVED_MODEL_PB: usize = 1 << 31;

/// The most nodes walked, graph and functions together.
const MAX_NODES: usize = 10_000_000;

/// Why a SavedModel's operators were not checked, or what they reach that the policy refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpPolicyError {
    /// `saved_model.pb` is not a SavedModel TensorFlow could load.
    #[error("saved_model.pb: {0}")]
    Format(String),
    /// No MetaGraphDef has the serving tags.
    #[error("saved_model.pb has no MetaGraphDef with tags {0:?}")]
    NoTags(Vec<String>),
    /// Operators outside the policy are reachable from a serving signature.
    #[error("{}", refused_text(.0))]
    Refused(Vec<RefusedOp>),
}

/// One operator the policy refuses, and where it was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusedOp {
    /// The operator's type (`WriteFile`).
    pub op: String,
    /// The node (`write_file`), and the function that holds it when not the graph.
    pub node: String,
    /// The function holding the node, if any.
    pub function: Option<String>,
    /// The serving signature that reaches it.
    pub signature: String,
}

fn refused_text(ops: &[RefusedOp]) -> String {
    let mut kinds: Vec<&str> = ops.iter().map(|o| o.op.as_str()).collect();
    kinds.sort_unstable();
    kinds.dedup();
    let first = &ops[0];
    let place = match &first.function {
        Some(f) => format!("node {:?} of function {:?}", first.node, f),
        None => format!("node {:?}", first.node),
    };
    format!(
        "the SavedModel's signature {:?} reaches operator {} ({place}), which the operator policy {POLICY_NAME} does not admit: a graph could use it to write, print or keep requesters' data; operators refused: {}{}",
        first.signature,
        first.op,
        kinds.join(", "),
        if ops.len() > 1 { format!(" ({} nodes)", ops.len()) } else { String::new() },
    )
}

/// The node named by a graph input (`node`, `node:1`, `^node`).
fn input_node(input: &str) -> &str {
    let name = input.strip_prefix('^').unwrap_or(input);
    name.split(':').next().unwrap_or(name)
}

/// The functions a node calls: its operator when that is a library function, and every
/// function-valued attribute (`f`, `then_branch`, `body`, lists of branches).
fn called<'a>(node: &'a NodeDef, library: &HashMap<&str, &'a FunctionDef>) -> Vec<&'a str> {
    let mut out = Vec::new();
    if library.contains_key(node.op.as_str()) {
        out.push(node.op.as_str());
    }
    for v in node.attr.values() {
        match &v.value {
            Some(attr_value::Value::Func(f)) => out.push(f.name.as_str()),
            Some(attr_value::Value::List(l)) => out.extend(l.func.iter().map(|f| f.name.as_str())),
            None => {}
        }
    }
    out
}

/// Checks the operators that the serving signatures of the MetaGraphDef with `tags` in
/// `saved_model_pb` can reach, against [`COMPUTE_OPS`] and `extra` (operators the owner
/// admitted for this model). Returns the operator types reached, sorted.
pub fn check(
    saved_model_pb: &[u8],
    tags: &[String],
    extra: &[String],
) -> Result<BTreeSet<String>, OpPolicyError> {
    if saved_model_pb.len() > MAX_SAVED_MODEL_PB {
        return Err(OpPolicyError::Format(format!(
            "{} bytes is larger than the {MAX_SAVED_MODEL_PB} TensorFlow reads",
            saved_model_pb.len()
        )));
    }
    let saved = SavedModel::decode(saved_model_pb)
        .map_err(|e| OpPolicyError::Format(format!("not a SavedModel protobuf: {e}")))?;
    let want: BTreeSet<&str> = tags.iter().map(String::as_str).collect();
    let meta = saved
        .meta_graphs
        .iter()
        .find(|m| {
            let have: BTreeSet<&str> = m
                .meta_info_def
                .as_ref()
                .map(|i| i.tags.iter().map(String::as_str).collect())
                .unwrap_or_default();
            have == want
        })
        .ok_or_else(|| OpPolicyError::NoTags(tags.to_vec()))?;
    check_meta_graph(meta, extra)
}

fn check_meta_graph(
    meta: &MetaGraphDef,
    extra: &[String],
) -> Result<BTreeSet<String>, OpPolicyError> {
    let empty = Default::default();
    let graph = meta.graph_def.as_ref().unwrap_or(&empty);
    let library: HashMap<&str, &FunctionDef> = graph
        .library
        .iter()
        .flat_map(|l| &l.function)
        .filter_map(|f| Some((f.signature.as_ref()?.name.as_str(), f)))
        .collect();
    let nodes: HashMap<&str, &NodeDef> = graph.node.iter().map(|n| (n.name.as_str(), n)).collect();
    let allowed = |op: &str| is_compute(op) || extra.iter().any(|e| e == op);

    let mut reached = BTreeSet::new();
    let mut refused = Vec::new();
    let mut signatures: Vec<(&String, _)> = meta
        .signature_def
        .iter()
        .filter(|(name, _)| !name.starts_with("__"))
        .collect();
    signatures.sort_by(|a, b| a.0.cmp(b.0));
    let mut seen_nodes = std::collections::HashSet::new();
    let mut seen_functions = std::collections::HashSet::new();
    let mut walked = 0usize;
    for (sig_name, sig) in signatures {
        let mut stack: Vec<&str> = sig
            .inputs
            .values()
            .chain(sig.outputs.values())
            .filter_map(|t| {
                let teeserve_wire::tensorflow::tensor_info::Encoding::Name(n) =
                    t.encoding.as_ref()?;
                Some(input_node(n))
            })
            .collect();
        let mut functions: Vec<&str> = Vec::new();
        while let Some(name) = stack.pop() {
            if !seen_nodes.insert(name) {
                continue;
            }
            walked += 1;
            if walked > MAX_NODES {
                return Err(OpPolicyError::Format(format!(
                    "more than {MAX_NODES} nodes reachable"
                )));
            }
            let Some(node) = nodes.get(name) else {
                // TensorFlow itself refuses a signature naming a missing tensor.
                continue;
            };
            note(
                node,
                None,
                sig_name,
                &library,
                &allowed,
                &mut reached,
                &mut refused,
            );
            functions.extend(called(node, &library));
            stack.extend(node.input.iter().map(|i| input_node(i)));
        }
        while let Some(f) = functions.pop() {
            if !seen_functions.insert(f) {
                continue;
            }
            let Some(def) = library.get(f) else {
                // An attribute naming no library function: TensorFlow fails to instantiate it.
                continue;
            };
            for node in &def.node_def {
                walked += 1;
                if walked > MAX_NODES {
                    return Err(OpPolicyError::Format(format!(
                        "more than {MAX_NODES} nodes reachable"
                    )));
                }
                note(
                    node,
                    Some(f),
                    sig_name,
                    &library,
                    &allowed,
                    &mut reached,
                    &mut refused,
                );
                functions.extend(called(node, &library));
            }
        }
    }
    if refused.is_empty() {
        Ok(reached)
    } else {
        Err(OpPolicyError::Refused(refused))
    }
}

fn note(
    node: &NodeDef,
    function: Option<&str>,
    signature: &str,
    library: &HashMap<&str, &FunctionDef>,
    allowed: &impl Fn(&str) -> bool,
    reached: &mut BTreeSet<String>,
    refused: &mut Vec<RefusedOp>,
) {
    // A call of a library function by name is checked through the function's own nodes.
    if library.contains_key(node.op.as_str()) {
        return;
    }
    if !reached.contains(&node.op) {
        reached.insert(node.op.clone());
    }
    if !allowed(&node.op) {
        refused.push(RefusedOp {
            op: node.op.clone(),
            node: node.name.clone(),
            function: function.map(str::to_owned),
            signature: signature.to_owned(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use teeserve_wire::tensorflow::{
        tensor_info, AttrValue, FunctionDefLibrary, GraphDef, NameAttrList, OpDef, SignatureDef,
        TensorInfo,
    };

    #[test]
    fn the_allowlist_is_sorted_and_has_no_io() {
        assert!(COMPUTE_OPS.windows(2).all(|w| w[0] < w[1]));
        for op in [
            "WriteFile",
            "ReadFile",
            "PrintV2",
            "Print",
            "Assert",
            "SaveV2",
            "RestoreV2",
            "AssignVariableOp",
            "AssignAddVariableOp",
            "WriteScalarSummary",
            "PyFunc",
            "MatchingFiles",
            "QueueEnqueueV2",
            "LookupTableInsertV2",
            "DebugIdentity",
            "TFRecordDataset",
        ] {
            assert!(!is_compute(op), "{op}");
        }
    }

    fn node(name: &str, op: &str, inputs: &[&str]) -> NodeDef {
        NodeDef {
            name: name.into(),
            op: op.into(),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            attr: Default::default(),
        }
    }

    fn saved(graph: GraphDef, outputs: &[(&str, &str)]) -> Vec<u8> {
        let sig = SignatureDef {
            outputs: outputs
                .iter()
                .map(|(a, t)| {
                    (
                        a.to_string(),
                        TensorInfo {
                            encoding: Some(tensor_info::Encoding::Name(t.to_string())),
                            ..Default::default()
                        },
                    )
                })
                .collect(),
            ..Default::default()
        };
        SavedModel {
            saved_model_schema_version: 1,
            meta_graphs: vec![MetaGraphDef {
                meta_info_def: Some(teeserve_wire::tensorflow::meta_graph_def::MetaInfoDef {
                    tags: vec!["serve".into()],
                }),
                graph_def: Some(graph),
                signature_def: [("serving_default".to_string(), sig)].into_iter().collect(),
            }],
        }
        .encode_to_vec()
    }

    fn serve() -> Vec<String> {
        vec!["serve".into()]
    }

    #[test]
    fn ops_reached_through_data_and_control_inputs_are_checked() {
        let g = GraphDef {
            node: vec![
                node("x", "Placeholder", &[]),
                node("w", "WriteFile", &["x"]),
                node("y", "Mul", &["x:0", "^w"]),
                node("save", "SaveV2", &["x"]),
            ],
            library: None,
        };
        let e = check(&saved(g.clone(), &[("y", "y:0")]), &serve(), &[]).unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("WriteFile") && text.contains("\"w\""),
            "{text}"
        );
        // Not reachable: the saver's SaveV2 is not refused.
        assert!(!text.contains("SaveV2"), "{text}");
        // The owner can widen it.
        let ops = check(&saved(g, &[("y", "y:0")]), &serve(), &["WriteFile".into()]).unwrap();
        assert!(ops.contains("Mul") && ops.contains("WriteFile") && !ops.contains("SaveV2"));
    }

    #[test]
    fn ops_inside_called_functions_are_checked() {
        let inner = FunctionDef {
            signature: Some(OpDef {
                name: "inner".into(),
            }),
            node_def: vec![node("p", "PrintV2", &[])],
        };
        let outer = FunctionDef {
            signature: Some(OpDef {
                name: "outer".into(),
            }),
            node_def: vec![node("call", "inner", &[])],
        };
        let mut call = node("y", "StatefulPartitionedCall", &["x"]);
        call.attr.insert(
            "f".into(),
            AttrValue {
                value: Some(attr_value::Value::Func(NameAttrList {
                    name: "outer".into(),
                    attr: Default::default(),
                })),
            },
        );
        let g = GraphDef {
            node: vec![node("x", "Placeholder", &[]), call],
            library: Some(FunctionDefLibrary {
                function: vec![inner, outer],
            }),
        };
        let e = check(&saved(g, &[("y", "y")]), &serve(), &[]).unwrap_err();
        assert!(
            e.to_string().contains("PrintV2") && e.to_string().contains("\"inner\""),
            "{e}"
        );
    }

    #[test]
    fn garbage_and_missing_tags_are_named() {
        assert!(matches!(
            check(b"\xff\xff\xff", &serve(), &[]),
            Err(OpPolicyError::Format(_))
        ));
        let g = GraphDef::default();
        assert!(matches!(
            check(&saved(g, &[]), &["train".into()], &[]),
            Err(OpPolicyError::NoTags(_))
        ));
    }
}
