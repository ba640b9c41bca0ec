//! Why a record is refused. A rejection is final: the record is never retried, and the
//! reason names what was wrong without quoting message content (bodies are private).

/// Each variant's text starts with a short kind (`misrouted`, `bad id`, …) so a reason can be
/// grouped in a dashboard; [`Rejection::kind`] gives that kind alone.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("empty: the record has no body")]
    Empty,
    #[error("too large: the body is {0} bytes, more than the 1 MiB limit")]
    TooLarge(usize),
    #[error("not JSON: {0}")]
    NotJson(String),
    #[error("unknown shape: {0}")]
    UnknownShape(String),
    #[error("unknown event type: {0}")]
    UnknownType(String),
    #[error("invalid field: {0}")]
    InvalidField(String),
    #[error("bad id: {0}")]
    BadId(String),
    #[error("NUL character: {0}")]
    NulCharacter(String),
    #[error("operation mismatch: {0}")]
    OperationMismatch(String),
    #[error("version in the future: {0}")]
    FutureVersion(String),
    #[error("misrouted: {0}")]
    Misrouted(String),
    #[error("refused by the database: {0}")]
    RefusedByDatabase(String),
    /// An input path that is not a file that can be read as events (a FIFO, a device).
    #[error("unreadable: {0}")]
    Unreadable(String),
}

impl Rejection {
    pub fn kind(&self) -> &'static str {
        match self {
            Rejection::Empty => "empty",
            Rejection::TooLarge(_) => "too large",
            Rejection::NotJson(_) => "not JSON",
            Rejection::UnknownShape(_) => "unknown shape",
            Rejection::UnknownType(_) => "unknown event type",
            Rejection::InvalidField(_) => "invalid field",
            Rejection::BadId(_) => "bad id",
            Rejection::NulCharacter(_) => "NUL character",
            Rejection::OperationMismatch(_) => "operation mismatch",
            Rejection::FutureVersion(_) => "version in the future",
            Rejection::Misrouted(_) => "misrouted",
            Rejection::RefusedByDatabase(_) => "refused by the database",
            Rejection::Unreadable(_) => "unreadable",
        }
    }
}
