//! The names sealed files are bound to: one rule, used by `teeserve seal` when it writes a model
//! tree, by `teeserve unseal` when it reads one back, and by the server when it loads a version.
//!
//! A sealed file authenticates the name it was sealed for (the header's bound name), so a file
//! cannot be renamed or moved without the reader noticing. For that to protect a model, the
//! name must say everything that identifies the file's place in the repository: the model,
//! the version and the file within the version. A host that copies a sealed file to another
//! version directory, or from one model to another sealed with the same key, is then refused.
//!
//! ```
//! use teeserve_seal::binding;
//! assert_eq!(binding::model_file("digits", 3, "model.onnx"), "digits/3/model.onnx");
//! assert_eq!(
//!     binding::in_model_tree("digits", "3/variables/variables.index").as_deref(),
//!     Some("digits/3/variables/variables.index")
//! );
//! assert_eq!(binding::in_model_tree("digits", "README"), None);
//! ```

/// The name a file of version `version` of model `model` is bound to:
/// `<model>/<version>/<file>`, where `file` is its path inside the version directory, with `/`
/// between components.
pub fn model_file(model: &str, version: i64, file: &str) -> String {
    format!("{model}/{version}/{file}")
}

/// The version directory a path relative to a model's base path starts with: its first
/// component, when that is a version number as TF Serving's layout names them (a non-negative
/// decimal integer).
pub fn version_of(rel: &str) -> Option<i64> {
    let first = rel.split('/').next()?;
    if first.is_empty() || !first.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    first.parse::<i64>().ok()
}

/// The bound name of `rel`, a path relative to the base path of model `model`
/// (`<version>/<file>`): [`model_file`] of its parts. None when `rel` is not inside a version
/// directory.
pub fn in_model_tree(model: &str, rel: &str) -> Option<String> {
    let version = version_of(rel)?;
    let (_, file) = rel.split_once('/')?;
    (!file.is_empty()).then(|| model_file(model, version, file))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_model_version_and_file() {
        assert_eq!(model_file("m", 0, "model.onnx"), "m/0/model.onnx");
        assert_eq!(
            in_model_tree("m", "12/model.onnx").as_deref(),
            Some("m/12/model.onnx")
        );
        // Only version directories hold model files.
        for rel in [
            "x/model.onnx",
            "-1/model.onnx",
            "1",
            "1/",
            "",
            "+1/a",
            "1a/b",
        ] {
            assert_eq!(in_model_tree("m", rel), None, "{rel:?}");
        }
        assert_ne!(
            in_model_tree("a", "1/model.onnx"),
            in_model_tree("b", "1/model.onnx")
        );
        assert_ne!(
            in_model_tree("a", "1/model.onnx"),
            in_model_tree("a", "2/model.onnx")
        );
    }
}
