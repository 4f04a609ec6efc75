//! The one error type of the request path, [`ApiError`]: a gRPC status code with TF Serving's
//! message. gRPC sends it as a status, REST as TF Serving's HTTP status and `{"error": ...}`;
//! every lower error becomes one here, in one place.

use teeserve_wire::code_name;
use tonic::Code;

use crate::engine::EngineError;
use crate::models::ResolveError;
use teeserve_tensor::TensorError;

/// An error with a gRPC / TF status code and TF Serving's message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The status code.
    pub code: Code,
    /// The message.
    pub message: String,
}

impl ApiError {
    /// An error.
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// TF's name of the code (`NOT_FOUND`).
    pub fn code_name(&self) -> &'static str {
        code_name(self.code)
    }

    /// The error as a gRPC status. TF Serving truncates messages longer than 1024 characters
    /// (grpc_status_util.cc).
    pub fn into_status(self) -> tonic::Status {
        let mut m = self.message;
        if m.len() > 1024 {
            let mut cut = 1024;
            while !m.is_char_boundary(cut) {
                cut -= 1;
            }
            m.truncate(cut);
            m.push_str("...TRUNCATED");
        }
        tonic::Status::new(self.code, m)
    }

    /// The HTTP status TF Serving maps the code to (`http_server.cc::ToHTTPStatusCode`).
    pub fn http_status(&self) -> u16 {
        match self.code {
            Code::Ok => 200,
            Code::Cancelled => 499,
            Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => 400,
            Code::DeadlineExceeded => 504,
            Code::NotFound => 404,
            Code::AlreadyExists | Code::Aborted => 409,
            Code::PermissionDenied => 403,
            Code::ResourceExhausted => 429,
            Code::Unimplemented => 501,
            Code::Unavailable => 503,
            Code::Unauthenticated => 401,
            _ => 500,
        }
    }
}

impl From<ResolveError> for ApiError {
    fn from(e: ResolveError) -> Self {
        match e {
            ResolveError::NotFound(m) => ApiError::new(Code::NotFound, m),
            ResolveError::BadLabel(m) => ApiError::new(Code::InvalidArgument, m),
            ResolveError::NotAccepted(m) => ApiError::new(Code::FailedPrecondition, m),
        }
    }
}

/// A model that fails on a request's inputs answers INVALID_ARGUMENT with the engine's message,
/// as TF Serving does for a failed session run.
impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        // Outputs past the response bound: what gRPC says of a message past its size limit.
        let code = match e {
            EngineError::OutputTooLarge { .. } => Code::ResourceExhausted,
            _ => Code::InvalidArgument,
        };
        ApiError::new(code, e.to_string())
    }
}

/// A tensor that cannot be decoded is the requester's fault: INVALID_ARGUMENT.
impl From<TensorError> for ApiError {
    fn from(e: TensorError) -> Self {
        ApiError::new(Code::InvalidArgument, e.to_string())
    }
}
