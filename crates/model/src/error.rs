//! IVS error kinds: the eleven exception shapes of the service model, their wire names and HTTP
//! statuses. The server turns an [`IvsError`] into a response in exactly one place (the HTTP layer).

use std::fmt;

/// One exception shape of the IVS model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    AccessDenied,
    ChannelNotBroadcasting,
    Conflict,
    InternalServer,
    PendingVerification,
    ResourceNotFound,
    ServiceQuotaExceeded,
    ServiceUnavailable,
    StreamUnavailable,
    Throttling,
    Validation,
    // Authentication failures: not shapes of the IVS model but answered by the AWS front door
    // before a request reaches the service, with these names and 403.
    UnrecognizedClient,
    InvalidSignature,
    MissingAuthenticationToken,
    IncompleteSignature,
}

impl ErrorKind {
    /// The name sent in `x-amzn-ErrorType` and `__type`, exactly as the model (or AWS) spells it.
    pub fn wire_name(self) -> &'static str {
        match self {
            ErrorKind::AccessDenied => "AccessDeniedException",
            ErrorKind::ChannelNotBroadcasting => "ChannelNotBroadcasting",
            ErrorKind::Conflict => "ConflictException",
            ErrorKind::InternalServer => "InternalServerException",
            ErrorKind::PendingVerification => "PendingVerification",
            ErrorKind::ResourceNotFound => "ResourceNotFoundException",
            ErrorKind::ServiceQuotaExceeded => "ServiceQuotaExceededException",
            ErrorKind::ServiceUnavailable => "ServiceUnavailable",
            ErrorKind::StreamUnavailable => "StreamUnavailable",
            ErrorKind::Throttling => "ThrottlingException",
            ErrorKind::Validation => "ValidationException",
            ErrorKind::UnrecognizedClient => "UnrecognizedClientException",
            ErrorKind::InvalidSignature => "InvalidSignatureException",
            ErrorKind::MissingAuthenticationToken => "MissingAuthenticationTokenException",
            ErrorKind::IncompleteSignature => "IncompleteSignatureException",
        }
    }

    /// Every kind, in declaration order.
    pub const ALL: [ErrorKind; 15] = {
        use ErrorKind::*;
        [
            AccessDenied,
            ChannelNotBroadcasting,
            Conflict,
            InternalServer,
            PendingVerification,
            ResourceNotFound,
            ServiceQuotaExceeded,
            ServiceUnavailable,
            StreamUnavailable,
            Throttling,
            Validation,
            UnrecognizedClient,
            InvalidSignature,
            MissingAuthenticationToken,
            IncompleteSignature,
        ]
    };

    /// The kind a wire name names ([`ErrorKind::wire_name`] read back).
    pub fn from_wire_name(name: &str) -> Option<ErrorKind> {
        ErrorKind::ALL.into_iter().find(|kind| kind.wire_name() == name)
    }

    /// The HTTP status of the exception (`error.httpStatusCode` in the model).
    pub fn http_status(self) -> u16 {
        match self {
            ErrorKind::Validation => 400,
            ErrorKind::ServiceQuotaExceeded => 402,
            ErrorKind::AccessDenied
            | ErrorKind::PendingVerification
            | ErrorKind::UnrecognizedClient
            | ErrorKind::InvalidSignature
            | ErrorKind::MissingAuthenticationToken
            | ErrorKind::IncompleteSignature => 403,
            ErrorKind::ResourceNotFound | ErrorKind::ChannelNotBroadcasting => 404,
            ErrorKind::Conflict => 409,
            ErrorKind::Throttling => 429,
            ErrorKind::InternalServer => 500,
            ErrorKind::ServiceUnavailable | ErrorKind::StreamUnavailable => 503,
        }
    }
}

/// An IVS error: its kind and a human-readable message (which never contains a secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IvsError {
    pub kind: ErrorKind,
    pub message: String,
}

impl IvsError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        IvsError { kind, message: message.into() }
    }
    pub fn validation(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Validation, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::ResourceNotFound, message)
    }
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Conflict, message)
    }
    pub fn quota(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::ServiceQuotaExceeded, message)
    }
    pub fn throttling(message: impl Into<String>) -> Self {
        IvsError::new(ErrorKind::Throttling, message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InternalServer, message)
    }
}

impl fmt::Display for IvsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind.wire_name(), self.message)
    }
}

impl std::error::Error for IvsError {}

#[cfg(test)]
mod tests {
    use super::ErrorKind;

    #[test]
    fn wire_names_read_back() {
        for name in ["ChannelNotBroadcasting", "ThrottlingException", "ConflictException", "ValidationException"] {
            assert_eq!(ErrorKind::from_wire_name(name).map(ErrorKind::wire_name), Some(name));
        }
        assert_eq!(ErrorKind::from_wire_name("Nope"), None);
        // Every kind reads back from its name, and no two share one.
        for kind in ErrorKind::ALL {
            assert_eq!(ErrorKind::from_wire_name(kind.wire_name()), Some(kind));
        }
        let names: std::collections::HashSet<_> = ErrorKind::ALL.iter().map(|k| k.wire_name()).collect();
        assert_eq!(names.len(), ErrorKind::ALL.len());
    }
}
