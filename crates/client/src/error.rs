//! What can go wrong on the requester's side, by class; the message says exactly what.

/// Why a requester could not get an answer, or refused to send its data.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequesterError {
    /// The TLS configuration (the CA, the client identity, the pinned key) is unusable.
    #[error("{0}")]
    Tls(String),
    /// The server could not be reached, or the connection broke.
    #[error("{0}")]
    Connect(String),
    /// The server refused the request (a gRPC status or an HTTP error) or answered something
    /// that is not a valid answer.
    #[error("{0}")]
    Server(String),
    /// The server's attestation could not be fetched, or does not verify, bind this
    /// connection's key, or satisfy the policy.
    #[error("{0}")]
    Attestation(String),
}

impl RequesterError {
    /// A [`RequesterError::Tls`] saying `e`.
    pub fn tls(e: impl std::fmt::Display) -> Self {
        Self::Tls(e.to_string())
    }

    /// A [`RequesterError::Connect`] saying `e`.
    pub fn connect(e: impl std::fmt::Display) -> Self {
        Self::Connect(e.to_string())
    }

    /// A [`RequesterError::Server`] saying `e`.
    pub fn server(e: impl std::fmt::Display) -> Self {
        Self::Server(e.to_string())
    }

    /// A [`RequesterError::Attestation`] saying `e`.
    pub fn attestation(e: impl std::fmt::Display) -> Self {
        Self::Attestation(e.to_string())
    }
}

impl From<RequesterError> for String {
    fn from(e: RequesterError) -> String {
        e.to_string()
    }
}

/// Why a server's attestation (or a quote) was refused: the rule that failed and what failed.
///
/// `rule` is a policy key (`mrenclave`, `tcb_status`, `tls_key_origin`, ...) when the policy
/// refused, the verification check (`signature`, `expired`, `root`, `tcb_not_supported`, ...,
/// as [`teeserve_attest::VerifyError::rule`] names them) when the evidence did not verify, and
/// `binding`, `nonce`, `certificate`, `collateral` or `fetch` for the requester's own checks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Refusal {
    /// The rule that failed.
    pub rule: &'static str,
    /// What failed it: the values involved (for a policy refusal) or the whole reason.
    pub detail: String,
    /// The full message.
    pub message: String,
}

impl Refusal {
    /// A refusal by `rule` whose detail is the whole message.
    pub fn new(rule: &'static str, message: impl Into<String>) -> Self {
        let message = message.into();
        Self {
            rule,
            detail: message.clone(),
            message,
        }
    }

    /// The same refusal, its message prefixed with `context`.
    pub fn context(mut self, context: &str) -> Self {
        self.message = format!("{context}: {}", self.message);
        self
    }
}

impl From<teeserve_attest::PolicyError> for Refusal {
    fn from(e: teeserve_attest::PolicyError) -> Self {
        Self {
            rule: e.rule,
            detail: e.detail.clone(),
            message: e.to_string(),
        }
    }
}

impl From<teeserve_attest::VerifyError> for Refusal {
    fn from(e: teeserve_attest::VerifyError) -> Self {
        Self::new(e.rule(), e.to_string())
    }
}

impl From<teeserve_attest::SourceError> for Refusal {
    fn from(e: teeserve_attest::SourceError) -> Self {
        match e {
            teeserve_attest::SourceError::Verify(v) => v.into(),
            other @ teeserve_attest::SourceError::Fetch(_) => {
                Self::new("collateral", other.to_string())
            }
        }
    }
}

impl From<teeserve_ratls::RaTlsError> for Refusal {
    fn from(e: teeserve_ratls::RaTlsError) -> Self {
        use teeserve_ratls::RaTlsError as E;
        let message = e.to_string();
        let rule = match &e {
            E::Verify(v) => v.rule(),
            E::Policy(p) => p.rule,
            E::Binding(_) => "binding",
            E::Collateral(_) => "collateral",
            E::Certificate(_) | E::Platform(_) | E::Generate(_) => "certificate",
        };
        match e {
            E::Policy(p) => Self {
                rule,
                detail: p.detail,
                message,
            },
            _ => Self::new(rule, message),
        }
    }
}

impl From<teeserve_ratls::DocumentError> for Refusal {
    fn from(e: teeserve_ratls::DocumentError) -> Self {
        use teeserve_ratls::DocumentError as E;
        let rule = match &e {
            E::Nonce(_) => "nonce",
            E::Binding(_) => "binding",
            _ => "document",
        };
        Self::new(rule, e.to_string())
    }
}
