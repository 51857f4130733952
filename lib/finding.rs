//! The one findings model: something wrong (or notable) found in the data — a severity, a stable
//! code, a message, and optionally where (byte offset, path). Every format and command reports
//! through it (`verify`'s problems, the file-system readers' issues, dvdisaster's damage,
//! `manifest` and `extract`); it sits at the bottom of the library so no lower module has to
//! import an upper one to report something.

use std::borrow::Cow;

/// How bad a [`Finding`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The data is damaged or incomplete: `verify` exits 1.
    Error,
    /// Worth knowing; does not fail verification.
    Warning,
    /// A remark about how the data was read (where a header was found, which copy was used):
    /// what `inspect` lists as `notes`, never a problem.
    Info,
}

/// Something wrong (or notable) in the data.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Finding {
    /// Stable machine-readable code, e.g. `fs.truncated`, `ext.checksum`.
    pub code: Cow<'static, str>,
    /// Error or warning.
    pub severity: Severity,
    /// Human explanation.
    pub message: String,
    /// Byte offset in the image the finding is about, when one is known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    /// Path inside the file system the finding is about, when one is known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

impl Finding {
    /// An error-severity finding.
    pub fn error(code: impl Into<Cow<'static, str>>, message: impl Into<String>) -> Self {
        Finding { code: code.into(), severity: Severity::Error, message: message.into(), offset: None, path: None }
    }
    /// A warning.
    pub fn warning(code: impl Into<Cow<'static, str>>, message: impl Into<String>) -> Self {
        Finding { severity: Severity::Warning, ..Finding::error(code, message) }
    }
    /// A remark (see [`Severity::Info`]).
    pub fn info(code: impl Into<Cow<'static, str>>, message: impl Into<String>) -> Self {
        Finding { severity: Severity::Info, ..Finding::error(code, message) }
    }
    /// Whether the data is damaged (an error, not a warning).
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
    /// The messages of `findings`, in order: the `notes` arrays of the JSON documents.
    pub fn messages(findings: &[Finding]) -> Vec<String> {
        findings.iter().map(|f| f.message.clone()).collect()
    }
    /// The same finding located at byte `offset`.
    pub fn at(mut self, offset: u64) -> Self {
        self.offset = Some(offset);
        self
    }
}
