//! The error type of the `segcam` library.

use std::path::PathBuf;

/// Everything that can go wrong in `segcam`; each variant names the file and what was wrong.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    // The cause is part of the message and not also a `source`, so that printing the
    // whole chain (`{:#}`) says it once.
    #[error("{path}: {cause}")]
    Io {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("{path}, line {line}: {message}")]
    ClassFile {
        path: PathBuf,
        line: usize,
        message: String,
    },
    /// A model file that cannot be used: not ONNX, no card, a card the graph contradicts.
    #[error("{path}: {message}")]
    Model { path: PathBuf, message: String },
    #[error("{0}")]
    Invalid(String),
    /// A network address that cannot be bound or served.
    #[error("{addr}: {cause}")]
    Net { addr: String, cause: std::io::Error },
}

impl Error {
    /// What went wrong reading or writing `path`.
    pub fn io(path: &std::path::Path, cause: std::io::Error) -> Self {
        Error::Io {
            path: path.to_path_buf(),
            cause,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
