//! Replacing the served models while the server runs, as TF Serving's `ServerCore::ReloadConfig`
//! does for `HandleReloadConfigRequest` and the model config file's polling: the new list
//! replaces the old one (models it omits are unloaded, new ones load), and the reload has
//! succeeded once every model of the new list has an available version.

use std::path::Path;

use super::config::ModelConfig;
use super::repository::{ModelRepository, State};

/// The most versions whose errors are listed for a model that did not load.
const MAX_LISTED_VERSIONS: usize = 4;

/// What a reload changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reloaded {
    /// Models the new list added.
    pub added: Vec<String>,
    /// Models it removed (unloaded).
    pub removed: Vec<String>,
    /// Why models of the new list have no available version, one line each; empty when all do.
    pub unavailable: Vec<String>,
}

impl ModelRepository {
    /// Replaces the model list with `configs`, loads what it names and unloads the rest, and
    /// says what changed and which models did not load. Reloads run one at a time; `source`
    /// (`rpc`, `poll`) is logged with the outcome.
    pub fn reload(&self, configs: Vec<ModelConfig>, source: &str) -> Reloaded {
        let _one_at_a_time = self.reloading.lock();
        let before = self.names();
        let after: Vec<String> = configs.iter().map(|c| c.name.clone()).collect();
        self.set_configs(configs);
        self.sync();
        let r = Reloaded {
            added: after
                .iter()
                .filter(|n| !before.contains(n))
                .cloned()
                .collect(),
            removed: before.into_iter().filter(|n| !after.contains(n)).collect(),
            unavailable: self.unavailable(),
        };
        if r.unavailable.is_empty() {
            tracing::info!(source, added = ?r.added, removed = ?r.removed, models = ?after, "model config reloaded");
        } else {
            tracing::error!(source, added = ?r.added, removed = ?r.removed, "model config reloaded, and not every model loaded: {}", r.unavailable.join("; "));
        }
        r
    }

    /// Why configured models have no available version, one line per model (empty when every
    /// model has one), with the likely fix where there is one.
    pub fn unavailable(&self) -> Vec<String> {
        let mut failed = Vec::new();
        for name in self.names() {
            let Some(m) = self.model(&name) else {
                continue;
            };
            if m.versions.values().any(|v| v.state == State::Available) {
                continue;
            }
            if m.versions.is_empty() {
                failed.push(format!(
                    "model {name}: no version found under {}{}",
                    m.config.base_path,
                    misplaced_hint(Path::new(&m.config.base_path))
                ));
                continue;
            }
            // The newest few: a base path with thousands of numbered directories is not
            // listed back to whoever asked for the reload.
            let mut errors: Vec<String> = m
                .versions
                .iter()
                .rev()
                .take(MAX_LISTED_VERSIONS)
                .map(|(n, v)| {
                    let e = v.error.as_deref().unwrap_or("not loaded");
                    format!("version {n}: {e}")
                })
                .collect();
            if m.versions.len() > MAX_LISTED_VERSIONS {
                errors.push(format!(
                    "and {} older versions",
                    m.versions.len() - MAX_LISTED_VERSIONS
                ));
            }
            failed.push(format!("model {name} did not load: {}", errors.join("; ")));
        }
        failed
    }
}

/// A model file right under the base path is the usual first mistake: TF Serving's layout puts
/// each version in a numbered directory.
fn misplaced_hint(base: &Path) -> String {
    let misplaced = [
        "model.onnx",
        "model.onnx.sealed",
        "saved_model.pb",
        "saved_model.pb.sealed",
    ]
    .into_iter()
    .find(|f| base.join(f).is_file());
    match misplaced {
        Some(f) => format!(
            "; {f} lies directly under the base path: move the version into {}/1/ (the layout is base_path/<version>/)",
            base.display()
        ),
        None => String::new(),
    }
}
