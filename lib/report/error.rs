//! The generic error document: what any command prints with `--json` when it could not do the
//! job (and a batch prints for each image it could not check). See `docs/JSON.md`.

use crate::ErrorKind;
use serde::{Deserialize, Serialize};

/// The stable name of an error kind in JSON (`"error": {"kind": ...}`).
pub fn error_kind_name(kind: ErrorKind) -> &'static str {
    kind.name()
}

/// The error part of [`ErrorDoc`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorBody {
    /// `io`, `not-recognized`, `corrupt`, `wrong-key`, `no-match`, `unsupported`,
    /// `invalid-input`, `unsafe`, `interrupted`, `time-budget`, `other`.
    pub kind: String,
    /// The message with its cause chain.
    pub message: String,
}

/// The document a command prints with `--json` when it could not do the job; in a batch, one per
/// image that could not be checked (then with `image`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorDoc {
    /// Always [`super::JSON_VERSION`].
    pub loopkit_json: u32,
    /// The command (`verify`, ...).
    pub command: String,
    /// The image (batch only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Always false.
    pub ok: bool,
    /// What went wrong.
    pub error: ErrorBody,
}

impl ErrorDoc {
    /// The document for `e` (message with its cause chain).
    pub fn new(command: &str, image: Option<String>, kind: &str, message: String) -> Self {
        ErrorDoc {
            loopkit_json: super::JSON_VERSION,
            command: command.into(),
            image,
            ok: false,
            error: ErrorBody { kind: kind.into(), message },
        }
    }
}

/// An error's message followed by its cause chain (`a: b: c`).
pub fn error_chain(e: &crate::Error) -> String {
    let mut msg = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        src = s.source();
    }
    msg
}
