//! A problem in a lab file, located at the offending value.

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// One error, printed as `path:line:column: field.path: what is wrong`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Diagnostic {
    pub file: PathBuf,
    /// 1-based.
    pub line: usize,
    /// 1-based, in characters.
    pub column: usize,
    /// Dotted path of the field, e.g. `spec.services.worker.replicas`; `yaml` for syntax errors.
    pub field: String,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: {}: {}", self.file.display(), self.line, self.column, self.field, self.message)
    }
}
