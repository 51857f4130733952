//! The one public error type: a stable [`ErrorKind`] to match on, a message that says what,
//! where, found and expected, and an optional boxed cause reached through `source()`.

use std::fmt;

/// What went wrong, coarsely; stable so callers (and the CLI's exit codes) can `match` on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Reading or writing failed at the operating-system level.
    Io,
    /// The input is not in any format loopkit recognises.
    NotRecognized,
    /// A structure was recognised but its contents are inconsistent.
    Corrupt,
    /// A key, passphrase or key file was supplied but does not open the data.
    WrongKey,
    /// No parameter set produced plausible data (legacy images have no header to check).
    NoMatch,
    /// Recognised, but loopkit does not implement it.
    Unsupported,
    /// The caller asked for something impossible or contradictory.
    InvalidInput,
    /// Refused because it could lose or expose data.
    Unsafe,
    /// The operation was cancelled (Ctrl-C).
    Interrupted,
}

impl ErrorKind {
    /// The stable name (`io`, `not-recognized`, …): the error document's `error.kind`, and the
    /// problem code of an image a batch could not check.
    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::Io => "io",
            ErrorKind::NotRecognized => "not-recognized",
            ErrorKind::Corrupt => "corrupt",
            ErrorKind::WrongKey => "wrong-key",
            ErrorKind::NoMatch => "no-match",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::InvalidInput => "invalid-input",
            ErrorKind::Unsafe => "unsafe",
            ErrorKind::Interrupted => "interrupted",
        }
    }
}

/// loopkit's error: kind + message + optional cause.
pub struct Error {
    kind: ErrorKind,
    message: String,
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

/// `Result` with loopkit's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A new error of `kind` with a human message.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error { kind, message: message.into(), source: None }
    }

    /// An I/O error with what was being done (`"reading old.img at byte 4096"`). Always
    /// [`ErrorKind::Io`]: an `EINTR` that reaches here is a failed call, not the user's Ctrl-C
    /// (only [`Error::interrupted`], from the interrupt flag, means that).
    pub fn io(what: impl Into<String>, err: std::io::Error) -> Self {
        Error { kind: ErrorKind::Io, message: what.into(), source: Some(Box::new(err)) }
    }

    /// Shorthand for [`ErrorKind::InvalidInput`].
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidInput, message)
    }

    /// Shorthand for [`ErrorKind::Corrupt`].
    pub fn corrupt(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Corrupt, message)
    }

    /// Shorthand for [`ErrorKind::Unsupported`].
    pub fn unsupported(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unsupported, message)
    }

    /// The operation was interrupted by the user.
    pub fn interrupted() -> Self {
        Self::new(ErrorKind::Interrupted, "interrupted")
    }

    /// Attach a cause.
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    /// Prefix the message with context (`"old.img: "`).
    pub fn context(mut self, ctx: impl fmt::Display) -> Self {
        self.message = format!("{ctx}: {}", self.message);
        self
    }

    /// The kind, for matching.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The message without the cause chain.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The positive `errno` a block-device front end reports for this error (it completes the
    /// request with `-errno`): the OS error when there is one, otherwise one per kind.
    pub fn errno(&self) -> i32 {
        let os = self.source.as_deref().and_then(|s| s.downcast_ref::<std::io::Error>()).map(io_errno);
        os.unwrap_or(match self.kind {
            ErrorKind::Io | ErrorKind::Corrupt | ErrorKind::NotRecognized | ErrorKind::NoMatch => libc::EIO,
            ErrorKind::WrongKey => libc::EACCES,
            ErrorKind::Unsupported => libc::EOPNOTSUPP,
            ErrorKind::InvalidInput => libc::EINVAL,
            ErrorKind::Unsafe => libc::EPERM,
            ErrorKind::Interrupted => libc::EINTR,
        })
    }
}

/// The positive `errno` for an I/O error: its OS code, or the closest one for its kind (`EIO`
/// when there is none).
pub fn io_errno(e: &std::io::Error) -> i32 {
    use std::io::ErrorKind as K;
    if let Some(code) = e.raw_os_error() {
        return code;
    }
    match e.kind() {
        K::NotFound => libc::ENOENT,
        K::PermissionDenied => libc::EACCES,
        K::InvalidInput => libc::EINVAL,
        K::UnexpectedEof => libc::EIO,
        K::Unsupported => libc::EOPNOTSUPP,
        K::OutOfMemory => libc::ENOMEM,
        K::Interrupted => libc::EINTR,
        K::WouldBlock => libc::EAGAIN,
        K::ReadOnlyFilesystem => libc::EROFS,
        K::StorageFull => libc::ENOSPC,
        K::TimedOut => libc::ETIMEDOUT,
        _ => libc::EIO,
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Error({:?}: {}", self.kind, self.message)?;
        if let Some(s) = &self.source {
            write!(f, ": {s}")?;
        }
        f.write_str(")")
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_deref().map(|e| e as &(dyn std::error::Error + 'static))
    }
}

impl From<std::io::Error> for Error {
    fn from(err: std::io::Error) -> Self {
        Error::io("I/O error", err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eintr_is_an_io_error_not_an_interrupt() {
        let e = Error::io("reading x", std::io::Error::from_raw_os_error(libc::EINTR));
        assert_eq!(e.kind(), ErrorKind::Io);
    }

    #[test]
    fn errno_mapping() {
        let os = Error::io("reading", std::io::Error::from_raw_os_error(libc::ENOSPC));
        assert_eq!(os.errno(), libc::ENOSPC);
        assert_eq!(Error::corrupt("x").errno(), libc::EIO);
        assert_eq!(Error::invalid("x").errno(), libc::EINVAL);
        assert_eq!(Error::unsupported("x").errno(), libc::EOPNOTSUPP);
        let kind_only = std::io::Error::new(std::io::ErrorKind::InvalidInput, "past the end");
        assert_eq!(io_errno(&kind_only), libc::EINVAL);
        assert_eq!(io_errno(&std::io::Error::other("?")), libc::EIO);
    }
}
