//! Exit codes and the error type of the command-line tools. Errors print as one line.

use std::fmt;

/// Process exit codes of `edgeinfer`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitCode {
    /// Everything worked.
    Ok = 0,
    /// The command ran but something it checked failed (e.g. an execution provider).
    Failure = 1,
    /// Bad usage or bad input: unknown flag, bad model file, wrong input shape.
    Usage = 2,
    /// A bug or an environment problem (backend failure).
    Internal = 3,
    /// The service could not take the request now (busy, timeout, not loaded, cancelled).
    Unavailable = 4,
}

impl ExitCode {
    /// From an API error's exit status.
    pub fn from_api(code: u8) -> ExitCode {
        match code {
            0 => ExitCode::Ok,
            1 => ExitCode::Failure,
            2 => ExitCode::Usage,
            4 => ExitCode::Unavailable,
            _ => ExitCode::Internal,
        }
    }
}

/// An error that ends a command.
#[derive(Debug)]
pub struct CliError {
    /// Exit code to use.
    pub code: ExitCode,
    /// One-line message.
    pub message: String,
}

impl CliError {
    /// Bad usage or input (exit 2).
    pub fn usage(message: impl Into<String>) -> Self {
        CliError { code: ExitCode::Usage, message: message.into() }
    }

    /// Internal error (exit 3).
    pub fn internal(message: impl Into<String>) -> Self {
        CliError { code: ExitCode::Internal, message: message.into() }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CliError {}
