//! What a model takes and gives: its [`Signature`]s, each a list of named, typed and shaped
//! tensors, and the SignatureDefs GetModelMetadata describes them with. The server's engines
//! read them from a model; a requester reads them from the server's metadata.

use teeserve_wire::tensorflow::serving::SignatureDefMap;
use teeserve_wire::tensorflow::{
    tensor_info, tensor_shape_proto, SignatureDef, TensorInfo, TensorShapeProto,
};

use crate::DType;

/// One input or output of a model's signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorSpec {
    /// The name (the ONNX graph input or output name).
    pub name: String,
    /// Element type.
    pub dtype: DType,
    /// Dimensions, -1 for dynamic ones.
    pub shape: Vec<i64>,
}

impl TensorSpec {
    /// The spec of `name`, `dtype` elements in `shape` (-1 for a dynamic dimension).
    pub fn new(name: &str, dtype: DType, shape: &[i64]) -> Self {
        Self {
            name: name.into(),
            dtype,
            shape: shape.to_vec(),
        }
    }
}

/// What a model takes and gives.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Signature {
    /// Inputs, in graph order.
    pub inputs: Vec<TensorSpec>,
    /// Outputs, in graph order.
    pub outputs: Vec<TensorSpec>,
}

/// The signature a request that names none runs (TF Serving's `kDefaultServingSignatureDefKey`).
pub const DEFAULT_SIGNATURE: &str = "serving_default";
/// The method name of a Predict signature (TensorFlow's `signature_constants.PREDICT_METHOD_NAME`).
pub const PREDICT_METHOD: &str = "tensorflow/serving/predict";

/// A model's signatures by name, each with the SignatureDef that GetModelMetadata reports for it
/// (TF Serving's SignatureDefMap). An ONNX model has one, [`DEFAULT_SIGNATURE`]; a SavedModel
/// has those of its MetaGraphDef.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Signatures {
    /// Every signature as the model describes it.
    defs: std::collections::BTreeMap<String, SignatureDef>,
    /// The signatures this server can run (all but those with a tensor type it does not
    /// speak, such as a SavedModel's `__saved_model_init_op`).
    runnable: std::collections::BTreeMap<String, Signature>,
}

impl Signatures {
    /// The one `serving_default` Predict signature of a model that has no others (ONNX).
    pub fn single(signature: Signature) -> Self {
        let def = signature_def(&signature, PREDICT_METHOD);
        let mut s = Self::default();
        s.insert(DEFAULT_SIGNATURE.into(), Some(signature), def);
        s
    }

    /// Adds signature `name`, described to clients by `def`; `signature` is what runs it, if
    /// it can run.
    pub fn insert(&mut self, name: String, signature: Option<Signature>, def: SignatureDef) {
        if let Some(s) = signature {
            self.runnable.insert(name.clone(), s);
        }
        self.defs.insert(name, def);
    }

    /// Signature `name` if it can run; the empty name is [`DEFAULT_SIGNATURE`].
    pub fn get(&self, name: &str) -> Option<&Signature> {
        self.runnable.get(Self::key(name))
    }

    /// The method name of signature `name` (e.g. `tensorflow/serving/classify`).
    pub fn method(&self, name: &str) -> Option<&str> {
        self.defs
            .get(Self::key(name))
            .map(|d| d.method_name.as_str())
    }

    fn key(name: &str) -> &str {
        if name.is_empty() {
            DEFAULT_SIGNATURE
        } else {
            name
        }
    }

    /// The names of the signatures that can run, in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.runnable.keys().map(String::as_str)
    }

    /// TF Serving's SignatureDefMap of these signatures.
    pub fn def_map(&self) -> SignatureDefMap {
        SignatureDefMap {
            signature_def: self
                .defs
                .iter()
                .map(|(n, d)| (n.clone(), d.clone()))
                .collect(),
        }
    }
}

/// The SignatureDef of a signature whose tensors are named by their aliases (ONNX).
pub fn signature_def(sig: &Signature, method: &str) -> SignatureDef {
    let info = |s: &TensorSpec| TensorInfo {
        encoding: Some(tensor_info::Encoding::Name(s.name.clone())),
        dtype: s.dtype.to_tf() as i32,
        tensor_shape: Some(TensorShapeProto {
            dim: s
                .shape
                .iter()
                .map(|&d| tensor_shape_proto::Dim {
                    size: d,
                    name: String::new(),
                })
                .collect(),
            unknown_rank: false,
        }),
    };
    SignatureDef {
        inputs: sig
            .inputs
            .iter()
            .map(|s| (s.name.clone(), info(s)))
            .collect(),
        outputs: sig
            .outputs
            .iter()
            .map(|s| (s.name.clone(), info(s)))
            .collect(),
        method_name: method.into(),
        defaults: Default::default(),
    }
}
