//! Errors as ag2 raises them. A hub or client failure is data: a Python exception type name plus
//! its message, exactly as the reference prints them in traces (`{"type", "message"}`).

use crate::json::py_str_repr;
use thiserror::Error;

/// The exception type of a failure. The first five are ag2's `NetworkError` family (they travel
/// on the wire); the rest are Python built-ins that ag2 lets escape from some paths.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ErrorKind {
    /// `NotFoundError`: unknown sender, channel, agent, adapter, task.
    NotFound,
    /// `AccessDeniedError`: rules (`outbound_to`, `inbound_from`, depth, concurrency caps).
    AccessDenied,
    /// `ProtocolError`: channel state, participation, adapter rules, handshake failures.
    Protocol,
    /// `AuthError`: an unknown auth scheme or a bad claim.
    Auth,
    /// `InboxFull`: a recipient's `max_pending` cap.
    InboxFull,
    /// `KeyError` (for example `close_channel` on an unknown id, a malformed workflow graph).
    Key,
    /// `ValueError` (for example a TTL string such as `"1.5h"`).
    Value,
    /// `TypeError` (for example a float TTL, malformed graph arguments).
    Type,
    /// `AttributeError` (a malformed payload read by an adapter).
    Attribute,
    /// `RuntimeError` (a disconnected client; scripted model failures default to it).
    Runtime,
    /// Any other exception type named by a scenario (a scripted `raise`).
    Other,
}

/// A failure with its Python type name and message.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[error("{type_name}: {message}")]
pub struct HubError {
    /// What kind of failure this is.
    pub kind: ErrorKind,
    /// The Python class name printed in traces (`ProtocolError`, `KeyError`, ...).
    pub type_name: String,
    /// `str(exc)`.
    pub message: String,
}

impl HubError {
    /// A failure of `kind` with `message`, named by the kind's Python class.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> HubError {
        HubError {
            kind,
            type_name: kind.python_name().to_string(),
            message: message.into(),
        }
    }

    /// `NotFoundError(message)`.
    pub fn not_found(message: impl Into<String>) -> HubError {
        HubError::new(ErrorKind::NotFound, message)
    }

    /// `AccessDeniedError(message)`.
    pub fn access_denied(message: impl Into<String>) -> HubError {
        HubError::new(ErrorKind::AccessDenied, message)
    }

    /// `ProtocolError(message)`.
    pub fn protocol(message: impl Into<String>) -> HubError {
        HubError::new(ErrorKind::Protocol, message)
    }

    /// `KeyError(key)`: Python prints a `KeyError` as the `repr` of its key.
    pub fn key(key: &str) -> HubError {
        HubError::new(ErrorKind::Key, py_str_repr(key))
    }

    /// `TypeError(message)`.
    pub fn type_error(message: impl Into<String>) -> HubError {
        HubError::new(ErrorKind::Type, message)
    }

    /// `ValueError(message)`.
    pub fn value_error(message: impl Into<String>) -> HubError {
        HubError::new(ErrorKind::Value, message)
    }

    /// `RuntimeError(message)`.
    pub fn runtime(message: impl Into<String>) -> HubError {
        HubError::new(ErrorKind::Runtime, message)
    }

    /// An exception of a named type, as a scripted model raises it. Python prints a `KeyError`'s
    /// message as the repr of its argument, which this reproduces.
    pub fn named(type_name: &str, message: &str) -> HubError {
        let kind = ErrorKind::from_python_name(type_name);
        let message = if type_name == "KeyError" {
            py_str_repr(message)
        } else {
            message.to_string()
        };
        HubError {
            kind,
            type_name: type_name.to_string(),
            message,
        }
    }

    /// The same failure under another Python type name (`OverflowError`, `StepTimeout`, ...).
    pub fn renamed(mut self, type_name: &str) -> HubError {
        self.type_name = type_name.to_string();
        self
    }

    /// True for ag2's `NetworkError` family, the errors listeners hear about.
    pub fn is_network_error(&self) -> bool {
        matches!(
            self.kind,
            ErrorKind::NotFound
                | ErrorKind::AccessDenied
                | ErrorKind::Protocol
                | ErrorKind::Auth
                | ErrorKind::InboxFull
        )
    }

    /// The wire error code (`not_found`, ..., or `error` for everything else, `InboxFull`
    /// included, as in ag2).
    pub fn wire_code(&self) -> &'static str {
        match self.kind {
            ErrorKind::NotFound => "not_found",
            ErrorKind::AccessDenied => "access_denied",
            ErrorKind::Protocol => "protocol_error",
            ErrorKind::Auth => "auth_failed",
            _ => "error",
        }
    }
}

impl ErrorKind {
    /// The Python class name of this kind.
    pub fn python_name(self) -> &'static str {
        match self {
            ErrorKind::NotFound => "NotFoundError",
            ErrorKind::AccessDenied => "AccessDeniedError",
            ErrorKind::Protocol => "ProtocolError",
            ErrorKind::Auth => "AuthError",
            ErrorKind::InboxFull => "InboxFull",
            ErrorKind::Key => "KeyError",
            ErrorKind::Value => "ValueError",
            ErrorKind::Type => "TypeError",
            ErrorKind::Attribute => "AttributeError",
            ErrorKind::Runtime => "RuntimeError",
            ErrorKind::Other => "Exception",
        }
    }

    fn from_python_name(name: &str) -> ErrorKind {
        match name {
            "NotFoundError" => ErrorKind::NotFound,
            "AccessDeniedError" => ErrorKind::AccessDenied,
            "ProtocolError" => ErrorKind::Protocol,
            "AuthError" => ErrorKind::Auth,
            "InboxFull" => ErrorKind::InboxFull,
            "KeyError" => ErrorKind::Key,
            "ValueError" => ErrorKind::Value,
            "TypeError" => ErrorKind::Type,
            "AttributeError" => ErrorKind::Attribute,
            "RuntimeError" => ErrorKind::Runtime,
            _ => ErrorKind::Other,
        }
    }
}
