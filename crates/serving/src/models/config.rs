//! Protocol-buffer text format, as TensorFlow Serving's configuration files are written
//! (`model_config_list`, batching parameters, SSLConfig, monitoring config), and the typed
//! configurations read from it. Grammar: protobuf's text format specification.

use super::version_policy::VersionPolicy;
use std::collections::BTreeMap;

/// A parsed field value.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    /// A string literal (already unescaped).
    Str(String),
    /// A number, identifier or bool, as written.
    Token(String),
    /// A nested message.
    Msg(Vec<(String, Value)>),
}

/// Why a configuration file was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TextProtoError {
    /// The text is not protobuf text format (with the line).
    #[error("{0}")]
    Syntax(String),
    /// A field is unknown, of the wrong kind, or has a value out of range.
    #[error("{0}")]
    Field(String),
}

const MAX_DEPTH: usize = 32;
const MAX_SIZE: usize = 16 * 1024 * 1024;

struct P<'a> {
    b: &'a [u8],
    i: usize,
    line: usize,
}

impl P<'_> {
    fn err(&self, what: &str) -> String {
        format!("line {}: {what}", self.line)
    }

    fn ws(&mut self) {
        while self.i < self.b.len() {
            match self.b[self.i] {
                b'\n' => {
                    self.line += 1;
                    self.i += 1;
                }
                b' ' | b'\t' | b'\r' | b',' | b';' => self.i += 1,
                b'#' => {
                    while self.i < self.b.len() && self.b[self.i] != b'\n' {
                        self.i += 1;
                    }
                }
                _ => break,
            }
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.ws();
        self.b.get(self.i).copied()
    }

    fn ident(&mut self) -> Result<String, String> {
        self.ws();
        let s = self.i;
        while self.i < self.b.len()
            && (self.b[self.i].is_ascii_alphanumeric() || b"_.-+[]/".contains(&self.b[self.i]))
        {
            self.i += 1;
        }
        if s == self.i {
            return Err(self.err("expected a field name or value"));
        }
        Ok(String::from_utf8_lossy(&self.b[s..self.i]).into_owned())
    }

    fn string(&mut self) -> Result<String, String> {
        let mut out = Vec::new();
        while matches!(self.peek(), Some(b'\'' | b'"')) {
            let q = self.b[self.i];
            self.i += 1;
            loop {
                let c = *self
                    .b
                    .get(self.i)
                    .ok_or_else(|| self.err("unterminated string"))?;
                self.i += 1;
                if c == q {
                    break;
                }
                if c == b'\n' {
                    return Err(self.err("newline in string"));
                }
                if c != b'\\' {
                    out.push(c);
                    continue;
                }
                let e = *self
                    .b
                    .get(self.i)
                    .ok_or_else(|| self.err("unterminated escape"))?;
                self.i += 1;
                match e {
                    b'n' => out.push(b'\n'),
                    b't' => out.push(b'\t'),
                    b'r' => out.push(b'\r'),
                    b'x' => {
                        let h = self
                            .b
                            .get(self.i..self.i + 2)
                            .ok_or_else(|| self.err("bad \\x escape"))?;
                        out.push(
                            u8::from_str_radix(&String::from_utf8_lossy(h), 16)
                                .map_err(|_| self.err("bad \\x escape"))?,
                        );
                        self.i += 2;
                    }
                    b'0'..=b'7' => {
                        let mut v = u32::from(e - b'0');
                        for _ in 0..2 {
                            match self.b.get(self.i) {
                                Some(&d @ b'0'..=b'7') => {
                                    v = v * 8 + u32::from(d - b'0');
                                    self.i += 1;
                                }
                                _ => break,
                            }
                        }
                        out.push(v as u8);
                    }
                    other => out.push(other),
                }
            }
        }
        String::from_utf8(out).map_err(|_| self.err("string is not UTF-8"))
    }

    fn value(&mut self, depth: usize) -> Result<Value, String> {
        match self.peek() {
            Some(b'{') | Some(b'<') => {
                let close = if self.b[self.i] == b'{' { b'}' } else { b'>' };
                self.i += 1;
                let fields = self.fields(depth + 1, Some(close))?;
                Ok(Value::Msg(fields))
            }
            Some(b'\'' | b'"') => Ok(Value::Str(self.string()?)),
            Some(_) => Ok(Value::Token(self.ident()?)),
            None => Err(self.err("expected a value")),
        }
    }

    fn fields(&mut self, depth: usize, close: Option<u8>) -> Result<Vec<(String, Value)>, String> {
        if depth > MAX_DEPTH {
            return Err(self.err("nested too deeply"));
        }
        let mut out = Vec::new();
        loop {
            match (self.peek(), close) {
                (None, None) => return Ok(out),
                (None, Some(_)) => return Err(self.err("missing closing brace")),
                (Some(c), Some(cl)) if c == cl => {
                    self.i += 1;
                    return Ok(out);
                }
                _ => {}
            }
            let name = self.ident()?;
            let colon = self.peek() == Some(b':');
            if colon {
                self.i += 1;
            }
            if self.peek() == Some(b'[') {
                self.i += 1;
                while self.peek() != Some(b']') {
                    let v = self.value(depth)?;
                    out.push((name.clone(), v));
                    if self.peek().is_none() {
                        return Err(self.err("missing ]"));
                    }
                }
                self.i += 1;
                continue;
            }
            let v = self.value(depth)?;
            if !colon && !matches!(v, Value::Msg(_)) {
                return Err(self.err(&format!("expected ':' after {name}")));
            }
            out.push((name, v));
        }
    }
}

/// Parses text-format protobuf into a list of fields.
pub(crate) fn parse(text: &str) -> Result<Vec<(String, Value)>, TextProtoError> {
    if text.len() > MAX_SIZE {
        return Err(TextProtoError::Syntax(
            "text proto larger than 16 MiB".into(),
        ));
    }
    P {
        b: text.as_bytes(),
        i: 0,
        line: 1,
    }
    .fields(0, None)
    .map_err(TextProtoError::Syntax)
}

fn msg<'a>(v: &'a Value, field: &str) -> Result<&'a [(String, Value)], String> {
    match v {
        Value::Msg(m) => Ok(m),
        _ => Err(format!("{field} must be a message {{ ... }}")),
    }
}

fn scalar(v: &Value, field: &str) -> Result<String, String> {
    match v {
        Value::Str(s) | Value::Token(s) => Ok(s.clone()),
        Value::Msg(_) => Err(format!("{field} must be a value, not a message")),
    }
}

fn int(v: &Value, field: &str) -> Result<i64, String> {
    let s = scalar(v, field)?;
    s.parse()
        .map_err(|_| format!("{field}: {s:?} is not an integer"))
}

fn boolean(v: &Value, field: &str) -> Result<bool, String> {
    match scalar(v, field)?.as_str() {
        "true" | "True" | "t" | "1" => Ok(true),
        "false" | "False" | "f" | "0" => Ok(false),
        s => Err(format!("{field}: {s:?} is not a bool")),
    }
}

/// Reads a wrapper message `{ value: N }` or a bare integer.
fn wrapped_int(v: &Value, field: &str) -> Result<i64, String> {
    match v {
        Value::Msg(m) => m
            .iter()
            .find(|(k, _)| k == "value")
            .map(|(_, v)| int(v, field))
            .unwrap_or(Ok(0)),
        other => int(other, field),
    }
}

/// One model of a `model_config_list`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelConfig {
    /// Model name.
    pub name: String,
    /// Directory holding `<version>/` subdirectories.
    pub base_path: String,
    /// Versions to serve.
    pub policy: VersionPolicy,
    /// Version labels.
    pub labels: BTreeMap<String, i64>,
}

/// Parses a ModelServerConfig (`model_config_list { config { ... } }`).
pub fn model_server_config(text: &str) -> Result<Vec<ModelConfig>, TextProtoError> {
    let top = parse(text)?;
    model_server_config_fields(top).map_err(TextProtoError::Field)
}

fn model_server_config_fields(top: Vec<(String, Value)>) -> Result<Vec<ModelConfig>, String> {
    let mut out = Vec::new();
    for (k, v) in &top {
        if k != "model_config_list" {
            return Err(format!(
                "unsupported top-level field {k:?} (only model_config_list)"
            ));
        }
        for (k, c) in msg(v, k)? {
            if k != "config" {
                return Err(format!("model_config_list: unknown field {k:?}"));
            }
            let mut m = ModelConfig {
                name: String::new(),
                base_path: String::new(),
                policy: VersionPolicy::Latest(1),
                labels: BTreeMap::new(),
            };
            for (k, v) in msg(c, "config")? {
                match k.as_str() {
                    "name" => m.name = scalar(v, "config.name")?,
                    "base_path" => m.base_path = scalar(v, "config.base_path")?,
                    "model_platform" | "model_type" | "logging_config" => {}
                    "model_version_policy" => {
                        for (pk, pv) in msg(v, "model_version_policy")? {
                            m.policy = match pk.as_str() {
                                "latest" => {
                                    let n = msg(pv, "latest")?
                                        .iter()
                                        .find(|(k, _)| k == "num_versions")
                                        .map(|(_, v)| int(v, "latest.num_versions"))
                                        .unwrap_or(Ok(1))?;
                                    VersionPolicy::Latest(n.max(1) as usize)
                                }
                                "all" => VersionPolicy::All,
                                "specific" => VersionPolicy::Specific(
                                    msg(pv, "specific")?
                                        .iter()
                                        .filter(|(k, _)| k == "versions")
                                        .map(|(_, v)| int(v, "specific.versions"))
                                        .collect::<Result<_, _>>()?,
                                ),
                                other => {
                                    return Err(format!(
                                        "model_version_policy: unknown policy {other:?}"
                                    ))
                                }
                            };
                        }
                    }
                    "version_labels" => {
                        let e = msg(v, "version_labels")?;
                        let key = e
                            .iter()
                            .find(|(k, _)| k == "key")
                            .map(|(_, v)| scalar(v, "version_labels.key"))
                            .transpose()?;
                        let val = e
                            .iter()
                            .find(|(k, _)| k == "value")
                            .map(|(_, v)| int(v, "version_labels.value"))
                            .transpose()?;
                        match (key, val) {
                            (Some(k), Some(v)) => {
                                m.labels.insert(k, v);
                            }
                            _ => return Err("version_labels needs key and value".into()),
                        }
                    }
                    other => return Err(format!("config: unknown field {other:?}")),
                }
            }
            if m.name.is_empty() || m.base_path.is_empty() {
                return Err("every config needs a name and a base_path".into());
            }
            out.push(m);
        }
    }
    check_unique(&out)?;
    Ok(out)
}

/// The most models one config may list (the file, or the reload RPC's message): a list is
/// loaded whole, and a reload request of a few megabytes could otherwise name a million models.
pub const MAX_MODELS: usize = 1024;

/// The error for a list of `n` models, over [`MAX_MODELS`].
fn too_many_models(n: usize) -> String {
    format!("the config lists {n} models; at most {MAX_MODELS} may be served")
}

/// A model named twice is refused, as TF Serving refuses it ("Illegal to list model ...
/// multiple times in config list"); so is a list of more than [`MAX_MODELS`].
fn check_unique(configs: &[ModelConfig]) -> Result<(), String> {
    if configs.len() > MAX_MODELS {
        return Err(too_many_models(configs.len()));
    }
    for (i, c) in configs.iter().enumerate() {
        if configs[..i].iter().any(|d| d.name == c.name) {
            return Err(format!(
                "model {:?} is listed more than once in the model config list",
                c.name
            ));
        }
    }
    Ok(())
}

/// The models of a ModelServerConfig message (the reload RPC's), under the rules of the text
/// file: a `model_config_list` only, every model with a name and a base path, none twice.
pub fn model_server_config_message(
    config: Option<&teeserve_wire::tensorflow::serving::ModelServerConfig>,
) -> Result<Vec<ModelConfig>, TextProtoError> {
    use teeserve_wire::tensorflow::serving::file_system_storage_path_source_config::servable_version_policy::PolicyChoice;
    use teeserve_wire::tensorflow::serving::model_server_config::Config;
    let list = match config.and_then(|c| c.config.as_ref()) {
        Some(Config::ModelConfigList(l)) => l,
        // TF Serving's words (model_service_impl.cc).
        _ => {
            return Err(TextProtoError::Field(
                "ServerModelConfig type not supported by HandleReloadConfigRequest. Only ModelConfigList is currently supported".into(),
            ))
        }
    };
    if list.config.len() > MAX_MODELS {
        return Err(TextProtoError::Field(too_many_models(list.config.len())));
    }
    let mut out = Vec::with_capacity(list.config.len());
    for c in &list.config {
        if c.name.is_empty() || c.base_path.is_empty() {
            return Err(TextProtoError::Field(
                "every config needs a name and a base_path".into(),
            ));
        }
        let policy = match c
            .model_version_policy
            .as_ref()
            .and_then(|p| p.policy_choice.as_ref())
        {
            None => VersionPolicy::Latest(1),
            Some(PolicyChoice::Latest(l)) => {
                VersionPolicy::Latest((l.num_versions as usize).max(1))
            }
            Some(PolicyChoice::All(_)) => VersionPolicy::All,
            Some(PolicyChoice::Specific(s)) => VersionPolicy::Specific(s.versions.clone()),
        };
        out.push(ModelConfig {
            name: c.name.clone(),
            base_path: c.base_path.clone(),
            policy,
            labels: c
                .version_labels
                .iter()
                .map(|(k, v)| (k.clone(), *v))
                .collect(),
        });
    }
    check_unique(&out).map_err(TextProtoError::Field)?;
    Ok(out)
}

/// Batching parameters (TF Serving's BatchingParameters).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchingParameters {
    /// Largest batch.
    pub max_batch_size: usize,
    /// How long to wait for a batch to fill.
    pub batch_timeout_micros: u64,
    /// Batches that may wait; past that, requests get UNAVAILABLE.
    pub max_enqueued_batches: usize,
    /// Threads running batches.
    pub num_batch_threads: usize,
}

impl Default for BatchingParameters {
    fn default() -> Self {
        // TensorFlow's BasicBatchScheduler defaults.
        Self {
            max_batch_size: 1000,
            batch_timeout_micros: 0,
            max_enqueued_batches: 10,
            num_batch_threads: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
        }
    }
}

/// Parses a batching parameters file.
pub fn batching_parameters(text: &str) -> Result<BatchingParameters, TextProtoError> {
    let top = parse(text)?;
    batching_parameters_fields(top).map_err(TextProtoError::Field)
}

fn batching_parameters_fields(top: Vec<(String, Value)>) -> Result<BatchingParameters, String> {
    let mut p = BatchingParameters::default();
    for (k, v) in top {
        let n = || wrapped_int(&v, &k);
        match k.as_str() {
            "max_batch_size" => p.max_batch_size = n()?.max(1) as usize,
            "batch_timeout_micros" => p.batch_timeout_micros = n()?.max(0) as u64,
            "max_enqueued_batches" => p.max_enqueued_batches = n()?.max(1) as usize,
            "num_batch_threads" => p.num_batch_threads = n()?.max(1) as usize,
            "thread_pool_name"
            | "allowed_batch_sizes"
            | "pad_variable_length_inputs"
            | "enable_large_batch_splitting"
            | "max_execution_batch_size" => {}
            other => return Err(format!("unknown batching parameter {other:?}")),
        }
    }
    Ok(p)
}

/// TF Serving's SSLConfig.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SslConfig {
    /// Server private key (PEM, inline).
    pub server_key: String,
    /// Server certificate chain (PEM, inline).
    pub server_cert: String,
    /// CA for client certificates (PEM, inline).
    pub custom_ca: String,
    /// Require and verify client certificates.
    pub client_verify: bool,
}

/// Parses an SSLConfig file.
pub fn ssl_config(text: &str) -> Result<SslConfig, TextProtoError> {
    let top = parse(text)?;
    ssl_config_fields(top).map_err(TextProtoError::Field)
}

fn ssl_config_fields(top: Vec<(String, Value)>) -> Result<SslConfig, String> {
    let mut c = SslConfig::default();
    for (k, v) in top {
        match k.as_str() {
            "server_key" => c.server_key = scalar(&v, &k)?,
            "server_cert" => c.server_cert = scalar(&v, &k)?,
            "custom_ca" => c.custom_ca = scalar(&v, &k)?,
            "client_verify" => c.client_verify = boolean(&v, &k)?,
            other => return Err(format!("unknown SSLConfig field {other:?}")),
        }
    }
    Ok(c)
}

/// Parses a MonitoringConfig file: `prometheus_config { enable: true path: "..." }`.
/// Returns the metrics path when enabled.
pub(crate) fn monitoring_config(text: &str) -> Result<Option<String>, TextProtoError> {
    let top = parse(text)?;
    monitoring_config_fields(top).map_err(TextProtoError::Field)
}

fn monitoring_config_fields(top: Vec<(String, Value)>) -> Result<Option<String>, String> {
    let mut out = None;
    for (k, v) in top {
        if k != "prometheus_config" {
            return Err(format!("unknown monitoring field {k:?}"));
        }
        let mut enable = false;
        let mut path = "/monitoring/prometheus/metrics".to_owned();
        for (k, v) in msg(&v, "prometheus_config")? {
            match k.as_str() {
                "enable" => enable = boolean(v, "prometheus_config.enable")?,
                "path" => path = scalar(v, "prometheus_config.path")?,
                other => return Err(format!("unknown prometheus_config field {other:?}")),
            }
        }
        if enable {
            out = Some(path);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_config_list() {
        let c = model_server_config(
            "model_config_list {\n config {\n name: 'm1'  base_path: \"/models/m1\"  model_platform: 'tensorflow'\n model_version_policy { specific { versions: 42 versions: 43 } }\n version_labels { key: 'stable' value: 42 }\n }\n config { name: 'm2' base_path: '/m2' model_version_policy { all {} } }\n}\n",
        )
        .unwrap();
        assert_eq!(c[0].policy, VersionPolicy::Specific(vec![42, 43]));
        assert_eq!(c[0].labels["stable"], 42);
        assert_eq!(c[1].policy, VersionPolicy::All);
    }

    #[test]
    fn batching_and_ssl() {
        let b = batching_parameters("max_batch_size { value: 128 } batch_timeout_micros { value: 0 } max_enqueued_batches { value: 1000000 } num_batch_threads { value: 8 }").unwrap();
        assert_eq!(b.max_batch_size, 128);
        let s = ssl_config("server_key: '-----BEGIN PRIVATE KEY-----\\nabc\\n-----END PRIVATE KEY-----'\nclient_verify: true").unwrap();
        assert!(s.server_key.contains("\nabc\n") && s.client_verify);
        assert!(parse("a { b: 1").is_err());
    }
}
