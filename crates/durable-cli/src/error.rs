//! The command's error: one line of text for stderr (or, for clap's messages in the shell,
//! its lines as clap wrote them).

use std::fmt;

/// Why a command failed, as the one line `durable` prints on stderr.
#[derive(Debug)]
pub struct Error {
    message: String,
    /// Keep the message's lines (clap's usage and suggestions) rather than join them.
    lines: bool,
    /// Standard output went away (`durable kv list | head`): stop quietly.
    pub broken_pipe: bool,
}

impl Error {
    /// An error with this message.
    pub fn msg(message: impl Into<String>) -> Error {
        Error { message: message.into(), lines: false, broken_pipe: false }
    }

    /// An error whose message keeps its lines (a usage text and its suggestions).
    pub fn lines(message: impl Into<String>) -> Error {
        Error { message: message.into(), lines: true, broken_pipe: false }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.lines {
            return f.write_str(self.message.trim_end());
        }
        // Every message fits on one line, whatever the library or the input put in it.
        let mut first = true;
        for line in self.message.lines() {
            if !first {
                f.write_str(" ")?;
            }
            f.write_str(line.trim_end())?;
            first = false;
        }
        Ok(())
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Error {
        Error {
            broken_pipe: e.kind() == std::io::ErrorKind::BrokenPipe,
            lines: false,
            message: e.to_string(),
        }
    }
}

macro_rules! from_display {
    ($($t:ty),*) => {$(
        impl From<$t> for Error {
            fn from(e: $t) -> Error {
                Error::msg(e.to_string())
            }
        }
    )*};
}

from_display!(
    durable_storage::Error,
    durable_storage::txn::Error,
    durable_storage::sql::Error,
    durable_storage::kv::Error,
    serde_json::Error
);

/// A `Result` whose error is the command's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
