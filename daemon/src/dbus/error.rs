//! D-Bus error names: [`ApiError`] codes become `org.edgeinfer.Error.<Code>` replies (server
//! side), and error replies become [`ApiError`]s again (client side).

use crate::api::{ApiError, ErrorCode};

/// The error replies of the edgeinfer interfaces.
#[derive(Debug, zbus::DBusError)]
#[zbus(prefix = "org.edgeinfer.Error")]
pub enum Error {
    /// A zbus error (serialisation, connection).
    #[zbus(error)]
    ZBus(zbus::Error),
    /// The request is malformed or does not fit the model.
    BadInput(String),
    /// No model with that id is configured.
    UnknownModel(String),
    /// The model is not loaded (or failed to load).
    NotLoaded(String),
    /// The model's queue is full.
    Busy(String),
    /// No answer in time.
    Timeout(String),
    /// Over a configured limit.
    TooLarge(String),
    /// The inference backend failed.
    Backend(String),
    /// A bug.
    Internal(String),
    /// Cancelled.
    Cancelled(String),
}

impl From<ApiError> for Error {
    fn from(e: ApiError) -> Self {
        let m = e.message;
        match e.code {
            ErrorCode::BadInput => Error::BadInput(m),
            ErrorCode::UnknownModel => Error::UnknownModel(m),
            ErrorCode::NotLoaded => Error::NotLoaded(m),
            ErrorCode::Busy => Error::Busy(m),
            ErrorCode::Timeout => Error::Timeout(m),
            ErrorCode::TooLarge => Error::TooLarge(m),
            ErrorCode::Backend => Error::Backend(m),
            ErrorCode::Internal => Error::Internal(m),
            ErrorCode::Cancelled => Error::Cancelled(m),
        }
    }
}

/// The [`ErrorCode`] of an `org.edgeinfer.Error.*` name.
pub fn code_of(name: &str) -> Option<ErrorCode> {
    let suffix = name.strip_prefix("org.edgeinfer.Error.")?;
    [
        ErrorCode::BadInput,
        ErrorCode::UnknownModel,
        ErrorCode::NotLoaded,
        ErrorCode::Busy,
        ErrorCode::Timeout,
        ErrorCode::TooLarge,
        ErrorCode::Backend,
        ErrorCode::Internal,
        ErrorCode::Cancelled,
    ]
    .into_iter()
    .find(|c| c.dbus_name().ends_with(&format!(".{suffix}")))
}

/// Client side: a failed call as an [`ApiError`]. Our own error names keep their code; the bus's
/// (no such name, access denied, invalid arguments) say what happened.
pub fn to_api_error(e: zbus::Error) -> ApiError {
    match e {
        zbus::Error::MethodError(name, message, _) => {
            let message = message.unwrap_or_default();
            match code_of(name.as_str()) {
                Some(code) => ApiError::new(code, message),
                None => match name.as_str() {
                    "org.freedesktop.DBus.Error.ServiceUnknown" | "org.freedesktop.DBus.Error.NameHasNoOwner" => {
                        ApiError::new(
                            ErrorCode::NotLoaded,
                            format!("edgeinferd is not on this bus (is it running with [dbus] enabled?): {message}"),
                        )
                    }
                    "org.freedesktop.DBus.Error.InvalidArgs" | "org.freedesktop.DBus.Error.UnknownMethod" => {
                        ApiError::bad_input(format!("{name}: {message}"))
                    }
                    "org.freedesktop.DBus.Error.NoReply" | "org.freedesktop.DBus.Error.Timeout" => {
                        ApiError::new(ErrorCode::Timeout, format!("{name}: {message}"))
                    }
                    _ => ApiError::internal(format!("{name}: {message}")),
                },
            }
        }
        zbus::Error::InputOutput(io) => ApiError::new(ErrorCode::NotLoaded, format!("D-Bus connection failed: {io}")),
        other => ApiError::internal(format!("D-Bus: {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_round_trips_through_its_dbus_name() {
        for code in [ErrorCode::BadInput, ErrorCode::Busy, ErrorCode::TooLarge, ErrorCode::Cancelled] {
            assert_eq!(code_of(code.dbus_name()), Some(code));
            let e: Error = ApiError::new(code, "m").into();
            assert_eq!(zbus::DBusError::name(&e).as_str(), code.dbus_name());
        }
        assert_eq!(code_of("org.freedesktop.DBus.Error.Failed"), None);
    }
}
