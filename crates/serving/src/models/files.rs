//! Reading a version's files: the model file (ONNX) or every file of a SavedModel, plaintext
//! or sealed and then unsealed in memory, each checked against the name it was sealed for and
//! the owner's admitted list, and hashed as it lies on disk.

use std::io::Read;
use std::path::{Path, PathBuf};

use teeserve_seal::SealKey;
use teeserve_seal::{binding, stream};

use super::admitted::AdmittedModels;

/// The plaintext model file of a version directory.
pub const MODEL_FILE: &str = "model.onnx";
/// The sealed model file of a version directory.
pub const SEALED_FILE: &str = "model.onnx.sealed";
/// The largest model file accepted (for a SavedModel: all its files together).
pub const MAX_MODEL_BYTES: u64 = 4 << 30;
/// The SavedModel file of a version directory (TensorFlow's format; its engine is TensorFlow).
pub(crate) const SAVED_MODEL_FILE: &str = crate::engine::tensorflow::SAVED_MODEL_FILE;
/// The sealed SavedModel file; every other file of the version is sealed beside it the same way.
pub(crate) const SAVED_MODEL_SEALED_FILE: &str = "saved_model.pb.sealed";
/// The most files a SavedModel version may have.
pub(crate) const MAX_SAVED_MODEL_FILES: usize = 100_000;
/// The suffix `teeserve seal` gives sealed files.
pub(crate) const SEALED_SUFFIX: &str = ".sealed";

/// A model's plaintext (kept in memory only) and the SHA-256 (hex) of the file it came from.
pub(crate) type ModelBytes = (zeroize::Zeroizing<Vec<u8>>, String);

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, bytes))
}

/// Why a version's model file was not loaded.
#[derive(Debug, thiserror::Error)]
pub enum ModelFileError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The file is larger than the server accepts.
    #[error("{path}: {len} bytes is larger than the 4 GiB accepted")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its length.
        len: u64,
    },
    /// A sealed file, and no key to open it.
    #[error("{path} is sealed but no model key was provisioned")]
    NoKey {
        /// The file.
        path: PathBuf,
    },
    /// A plaintext model on a server that unseals its models: the host could choose the model.
    #[error("{path} is a plaintext model, and this server serves only sealed models (it holds a model key): a plaintext file on the host's disk would let the host choose what runs; seal it with `teeserve seal`")]
    PlaintextRefused {
        /// The file.
        path: PathBuf,
    },
    /// A SavedModel, and no TensorFlow engine.
    #[error("{dir} holds a TensorFlow SavedModel, and this server was given no TensorFlow library (--tensorflow_lib, or TEESERVE_TENSORFLOW_LIB)")]
    NoTensorFlow {
        /// The version directory.
        dir: PathBuf,
    },
    /// A SavedModel with more files than accepted.
    #[error("{dir}: more than {MAX_SAVED_MODEL_FILES} files")]
    TooManyFiles {
        /// The version directory.
        dir: PathBuf,
    },
    /// Neither file is there.
    #[error(
        "{dir} has none of model.onnx, model.onnx.sealed, saved_model.pb, saved_model.pb.sealed"
    )]
    Missing {
        /// The version directory.
        dir: PathBuf,
    },
    /// The sealed file is bound to another model, version or file.
    #[error("{path}: the file is sealed for {found:?}, not for {expected:?}; a sealed model cannot be moved to another model or version{}", binding_hint(found, expected))]
    WrongBinding {
        /// The file.
        path: PathBuf,
        /// The name in the file.
        found: String,
        /// The name this place in the repository needs.
        expected: String,
    },
    /// Unsealing failed (wrong key, tampering, bad format).
    #[error("{path}: {source}")]
    Unseal {
        /// The file.
        path: PathBuf,
        /// The error.
        source: teeserve_seal::SealError,
    },
    /// The owner's list of admitted model files does not admit this one.
    #[error("{path}: {reason}")]
    NotAdmitted {
        /// The file.
        path: PathBuf,
        /// Which rule of the list refused it.
        reason: String,
    },
}

/// The likely fix of a sealed file found in another place than it was sealed for.
fn binding_hint(found: &str, expected: &str) -> String {
    let split = |n: &str| -> Option<(String, String)> {
        let mut parts = n.splitn(3, '/');
        let model = parts.next()?.to_owned();
        let version = parts.next()?.to_owned();
        parts.next()?;
        Some((model, version))
    };
    match (split(found), split(expected)) {
        (Some((fm, fv)), Some((em, ev))) if fm != em && fv == ev => format!(
            ": it was sealed as model {fm:?}; serve it as --model_name {fm} (or name it so in the model config), or seal it again with `teeserve seal --name {em}`"
        ),
        (Some((_, fv)), Some((_, ev))) if fv != ev => format!(
            ": it was sealed as version {fv}; put it back in {fv}/, or seal the model again"
        ),
        _ => " (sealed by an older teeserve? seal it again: `teeserve seal --name <model>`)".into(),
    }
}

fn read_file(p: &Path) -> Result<Vec<u8>, ModelFileError> {
    let io = |source| ModelFileError::Io {
        path: p.to_owned(),
        source,
    };
    let len = std::fs::metadata(p).map_err(io)?.len();
    if len > MAX_MODEL_BYTES {
        return Err(ModelFileError::TooLarge {
            path: p.to_owned(),
            len,
        });
    }
    std::fs::read(p).map_err(io)
}

/// Reads version `version` of model `model` from its directory `dir`, unsealing it in memory
/// when sealed (the plaintext stays in memory). With a key, the version must be sealed, for
/// this model and version; with an admitted-models list, the list must admit it.
pub(crate) fn read_model(
    dir: &Path,
    model: &str,
    version: i64,
    key: Option<&SealKey>,
    admitted: Option<&AdmittedModels>,
) -> Result<ModelBytes, ModelFileError> {
    let sealed = dir.join(SEALED_FILE);
    let plain = dir.join(MODEL_FILE);
    let admit = |path: &Path, digest: &str| match admitted
        .and_then(|a| a.refusal(model, version, digest))
    {
        Some(reason) => Err(ModelFileError::NotAdmitted {
            path: path.to_owned(),
            reason,
        }),
        None => Ok(()),
    };
    if sealed.exists() {
        let key = key.ok_or_else(|| ModelFileError::NoKey {
            path: sealed.clone(),
        })?;
        let unseal = |source| ModelFileError::Unseal {
            path: sealed.clone(),
            source,
        };
        // The bound name is checked from the header alone, so a misplaced file is refused
        // without reading all of it.
        let io = |source| ModelFileError::Io {
            path: sealed.clone(),
            source,
        };
        let mut head = Vec::new();
        std::fs::File::open(&sealed)
            .map_err(io)?
            .take((stream::MAX_NAME + 1024) as u64)
            .read_to_end(&mut head)
            .map_err(io)?;
        let (header, _) = stream::SealedHeader::parse(&head).map_err(unseal)?;
        let expected = binding::model_file(model, version, MODEL_FILE);
        if header.name != expected {
            return Err(ModelFileError::WrongBinding {
                path: sealed,
                found: header.name,
                expected,
            });
        }
        let bytes = read_file(&sealed)?;
        let digest = sha256_hex(&bytes);
        admit(&sealed, &digest)?;
        let plaintext = stream::unseal_to_vec(key, &bytes, Some(&expected)).map_err(unseal)?;
        return Ok((plaintext, digest));
    }
    if plain.exists() {
        if key.is_some() {
            return Err(ModelFileError::PlaintextRefused { path: plain });
        }
        let bytes = zeroize::Zeroizing::new(read_file(&plain)?);
        let digest = sha256_hex(&bytes);
        admit(&plain, &digest)?;
        return Ok((bytes, digest));
    }
    Err(ModelFileError::Missing {
        dir: dir.to_owned(),
    })
}

/// Whether a version directory holds a TensorFlow SavedModel (plaintext or sealed).
pub(crate) fn is_saved_model(dir: &Path) -> bool {
    dir.join(SAVED_MODEL_FILE).is_file() || dir.join(SAVED_MODEL_SEALED_FILE).is_file()
}

/// A SavedModel version as read by [`read_saved_model`].
#[derive(Debug)]
pub(crate) struct SavedModelFiles {
    /// The files (path in the version, plaintext bytes), kept in memory only: unsealed when
    /// sealed, as read (and hashed) when plaintext. TensorFlow loads these bytes, never the
    /// directory again, so the host cannot swap a file between the hashing and the load.
    pub plaintext: Vec<(String, zeroize::Zeroizing<Vec<u8>>)>,
    /// SHA-256 (hex) of the version's manifest: the lines `<sha256 of the file> <path>\n`, one
    /// per file as it lies on disk (sealed files when sealed), sorted by path.
    pub digest: String,
}

/// The files under `dir`, as paths relative to it with `/` separators, sorted.
fn files_under(dir: &Path) -> Result<Vec<String>, ModelFileError> {
    let mut out = Vec::new();
    let mut stack = vec![(dir.to_owned(), String::new())];
    while let Some((d, prefix)) = stack.pop() {
        let io = |source| ModelFileError::Io {
            path: d.clone(),
            source,
        };
        for e in std::fs::read_dir(&d).map_err(io)? {
            let e = e.map_err(io)?;
            let name = e.file_name().to_string_lossy().into_owned();
            let rel = if prefix.is_empty() {
                name
            } else {
                format!("{prefix}/{name}")
            };
            let t = e.file_type().map_err(io)?;
            if t.is_dir() {
                stack.push((e.path(), rel));
            } else if t.is_file() {
                out.push(rel);
            }
            if out.len() + stack.len() > MAX_SAVED_MODEL_FILES {
                return Err(ModelFileError::TooManyFiles {
                    dir: dir.to_owned(),
                });
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Reads the SavedModel version `version` of `model` in `dir`. A sealed version (every file
/// sealed by `teeserve seal`, each bound to `<model>/<version>/<path in the version>`) is
/// unsealed in memory; with a key, only sealed versions are served; with an admitted-models
/// list, the list must admit the version's manifest digest.
pub(crate) fn read_saved_model(
    dir: &Path,
    model: &str,
    version: i64,
    key: Option<&SealKey>,
    admitted: Option<&AdmittedModels>,
) -> Result<SavedModelFiles, ModelFileError> {
    let sealed = dir.join(SAVED_MODEL_SEALED_FILE).is_file();
    if !sealed && key.is_some() {
        return Err(ModelFileError::PlaintextRefused {
            path: dir.join(SAVED_MODEL_FILE),
        });
    }
    let mut manifest = String::new();
    let mut plaintext = Vec::new();
    let mut total = 0u64;
    for rel in files_under(dir)? {
        let path = dir.join(&rel);
        let bytes = zeroize::Zeroizing::new(read_file(&path)?);
        total = total.saturating_add(bytes.len() as u64);
        if total > MAX_MODEL_BYTES {
            return Err(ModelFileError::TooLarge { path, len: total });
        }
        manifest.push_str(&format!("{} {rel}\n", sha256_hex(&bytes)));
        if !sealed {
            plaintext.push((rel, bytes));
            continue;
        }
        let Some(inner) = rel.strip_suffix(SEALED_SUFFIX) else {
            // A plaintext file beside sealed ones would be a file the host chose.
            return Err(ModelFileError::PlaintextRefused { path });
        };
        let key = key.ok_or_else(|| ModelFileError::NoKey { path: path.clone() })?;
        let unseal = |source| ModelFileError::Unseal {
            path: path.clone(),
            source,
        };
        let (header, _) = stream::SealedHeader::parse(&bytes).map_err(unseal)?;
        let expected = binding::model_file(model, version, inner);
        if header.name != expected {
            return Err(ModelFileError::WrongBinding {
                path,
                found: header.name,
                expected,
            });
        }
        let plain = stream::unseal_to_vec(key, &bytes, Some(&expected)).map_err(unseal)?;
        plaintext.push((inner.to_owned(), plain));
    }
    let digest = sha256_hex(manifest.as_bytes());
    if let Some(reason) = admitted.and_then(|a| a.refusal(model, version, &digest)) {
        return Err(ModelFileError::NotAdmitted {
            path: dir.to_owned(),
            reason,
        });
    }
    Ok(SavedModelFiles { plaintext, digest })
}

#[cfg(test)]
mod tests {
    use super::binding_hint;

    #[test]
    fn a_misplaced_sealed_file_gets_the_fix_that_applies() {
        let h = binding_hint("prod/1/model.onnx", "mymodel/1/model.onnx");
        assert!(
            h.contains("--model_name prod") && h.contains("teeserve seal --name mymodel"),
            "{h}"
        );
        let h = binding_hint("prod/1/model.onnx", "prod/2/model.onnx");
        assert!(h.contains("sealed as version 1") && h.contains("1/"), "{h}");
        let h = binding_hint("1/model.onnx", "prod/1/model.onnx");
        assert!(h.contains("older teeserve"), "{h}");
    }
}
