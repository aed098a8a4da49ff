//! The one error type of every weir configuration file: pipelines (TOML and
//! SQL), `gateway.toml` and board profiles. It names the file, the line and
//! column, what is wrong and what to do.

use std::fmt;

/// An error in a configuration file, with its place.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigError {
    /// The file.
    pub file: String,
    /// 1-based line (0 when the error is about the whole file).
    pub line: usize,
    /// 1-based column.
    pub col: usize,
    /// What is wrong.
    pub msg: String,
    /// What to do.
    pub help: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line > 0 {
            write!(
                f,
                "{}:{}:{}: error: {}",
                self.file, self.line, self.col, self.msg
            )?;
        } else {
            write!(f, "{}: error: {}", self.file, self.msg)?;
        }
        if !self.help.is_empty() {
            write!(f, "\n  help: {}", self.help)?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}
