//! The core's one error type; its variants are the protocol's error codes.

use std::borrow::Cow;

/// Why a request failed, as the client will be told.
///
/// Cheap to build on the hot path: messages are usually `&'static str`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The frame is malformed or asks for something impossible.
    #[error("{0}")]
    BadRequest(Cow<'static, str>),
    /// No session yet, or the token is no longer good.
    #[error("{0}")]
    Unauthorized(Cow<'static, str>),
    /// The session's claims do not allow this.
    #[error("{0}")]
    Forbidden(Cow<'static, str>),
    /// The thing named does not exist.
    #[error("{0}")]
    NotFound(Cow<'static, str>),
    /// A body, frame or list is over its limit.
    #[error("{0}")]
    TooLarge(Cow<'static, str>),
    /// The request contradicts the current state.
    #[error("{0}")]
    Conflict(Cow<'static, str>),
    /// A per-connection rate or in-flight limit was passed; retry after the given time.
    #[error("{message}")]
    RateLimited {
        message: Cow<'static, str>,
        retry_after_ms: u64,
    },
    /// The server is over its admission limits; retry after the given time.
    #[error("{message}")]
    Overloaded {
        message: Cow<'static, str>,
        retry_after_ms: u64,
    },
    /// Our fault, never the client's (a storage failure, a broken invariant).
    #[error("{0}")]
    Internal(Cow<'static, str>),
}

impl Error {
    /// The protocol's error code for this error.
    pub fn code(&self) -> &'static str {
        match self {
            Error::BadRequest(_) => "bad_request",
            Error::Unauthorized(_) => "unauthorized",
            Error::Forbidden(_) => "forbidden",
            Error::NotFound(_) => "not_found",
            Error::TooLarge(_) => "too_large",
            Error::Conflict(_) => "conflict",
            Error::RateLimited { .. } => "rate_limited",
            Error::Overloaded { .. } => "overloaded",
            Error::Internal(_) => "internal",
        }
    }

    /// How long the client should wait before retrying, for the codes that carry it.
    pub fn retry_after_ms(&self) -> Option<u64> {
        match self {
            Error::RateLimited { retry_after_ms, .. }
            | Error::Overloaded { retry_after_ms, .. } => Some(*retry_after_ms),
            _ => None,
        }
    }

    /// Shorthand for the most common error.
    pub fn bad_request(message: impl Into<Cow<'static, str>>) -> Error {
        Error::BadRequest(message.into())
    }
}

/// Result alias of the core.
pub type Result<T, E = Error> = std::result::Result<T, E>;
