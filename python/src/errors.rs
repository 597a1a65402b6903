//! The exception hierarchy of `rushhour._core`, rooted at `RushhourError`; one subclass
//! per protocol error code, each with the code as its `code` class attribute.

use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use rushhour_core::Error;

create_exception!(
    _core,
    RushhourError,
    PyException,
    "Base class of every rushhour error."
);
create_exception!(
    _core,
    BadRequestError,
    RushhourError,
    "The request is malformed (bad_request)."
);
create_exception!(
    _core,
    UnauthorizedError,
    RushhourError,
    "No valid session (unauthorized)."
);
create_exception!(
    _core,
    ForbiddenError,
    RushhourError,
    "The token's claims do not allow it (forbidden)."
);
create_exception!(
    _core,
    NotFoundError,
    RushhourError,
    "No such thing (not_found)."
);
create_exception!(
    _core,
    TooLargeError,
    RushhourError,
    "Over a size limit (too_large)."
);
create_exception!(
    _core,
    ConflictError,
    RushhourError,
    "Contradicts the current state (conflict)."
);
create_exception!(
    _core,
    RateLimitedError,
    RushhourError,
    "Over a rate limit; retry later (rate_limited)."
);
create_exception!(
    _core,
    OverloadedError,
    RushhourError,
    "Over the admission limits; retry later (overloaded)."
);
create_exception!(
    _core,
    InternalError,
    RushhourError,
    "The server's fault (internal)."
);

/// The core's error as a Python exception: args are `(message, retry_after_ms or None)`.
pub struct CoreError(pub Error);

impl From<Error> for CoreError {
    fn from(e: Error) -> Self {
        CoreError(e)
    }
}

impl From<CoreError> for PyErr {
    fn from(CoreError(e): CoreError) -> PyErr {
        let args = (e.to_string(), e.retry_after_ms());
        match e {
            Error::BadRequest(_) => BadRequestError::new_err(args),
            Error::Unauthorized(_) => UnauthorizedError::new_err(args),
            Error::Forbidden(_) => ForbiddenError::new_err(args),
            Error::NotFound(_) => NotFoundError::new_err(args),
            Error::TooLarge(_) => TooLargeError::new_err(args),
            Error::Conflict(_) => ConflictError::new_err(args),
            Error::RateLimited { .. } => RateLimitedError::new_err(args),
            Error::Overloaded { .. } => OverloadedError::new_err(args),
            Error::Internal(_) => InternalError::new_err(args),
        }
    }
}

/// Adds the classes to the module, each with its protocol `code`.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("RushhourError", py.get_type::<RushhourError>())?;
    let classes = [
        (
            "BadRequestError",
            py.get_type::<BadRequestError>(),
            "bad_request",
        ),
        (
            "UnauthorizedError",
            py.get_type::<UnauthorizedError>(),
            "unauthorized",
        ),
        (
            "ForbiddenError",
            py.get_type::<ForbiddenError>(),
            "forbidden",
        ),
        ("NotFoundError", py.get_type::<NotFoundError>(), "not_found"),
        ("TooLargeError", py.get_type::<TooLargeError>(), "too_large"),
        ("ConflictError", py.get_type::<ConflictError>(), "conflict"),
        (
            "RateLimitedError",
            py.get_type::<RateLimitedError>(),
            "rate_limited",
        ),
        (
            "OverloadedError",
            py.get_type::<OverloadedError>(),
            "overloaded",
        ),
        ("InternalError", py.get_type::<InternalError>(), "internal"),
    ];
    py.get_type::<RushhourError>().setattr("code", "internal")?;
    for (name, class, code) in classes {
        class.setattr("code", code)?;
        m.add(name, class)?;
    }
    Ok(())
}
