//! Decode errors: typed, with the JSON path of the offending value and the reason.
//!
//! Every error says where (`data[3].NgayTiepNhan`) and why, so a province's IT team can
//! find the record in their own system. Errors are classified: a permanent error sends the
//! message to the dead-letter topic; a retryable one means "try the same bytes again later".

use std::fmt;

/// Whether retrying the same bytes can succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// The bytes themselves are wrong: dead-letter them, never retry.
    Permanent,
    /// Something outside the bytes failed; the same input may succeed later.
    Retryable,
}

impl ErrorClass {
    /// Stable lower-case name, used as a metric label and a dead-letter header value.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Permanent => "permanent",
            ErrorClass::Retryable => "retryable",
        }
    }
}

/// One record (or a whole message) that could not become an event.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct DecodeError {
    /// JSON path of the value at fault, `$` for the whole message.
    pub path: String,
    /// What is wrong with it.
    pub reason: Reason,
}

impl DecodeError {
    pub(crate) fn new(path: impl Into<String>, reason: Reason) -> Self {
        let path = path.into();
        let path = if path.is_empty() {
            "$".to_owned()
        } else {
            path
        };
        DecodeError { path, reason }
    }

    /// A decoder failure on the whole message, for a caller that caught the decoder
    /// panicking.
    pub fn internal(what: impl Into<String>) -> Self {
        DecodeError::new("$", Reason::Internal(what.into()))
    }

    /// Every reason a decoder reports today is a property of the bytes, so permanent;
    /// the class is still part of the contract so the ingestor never has to guess.
    pub fn class(&self) -> ErrorClass {
        match self.reason {
            Reason::Unavailable(_) => ErrorClass::Retryable,
            _ => ErrorClass::Permanent,
        }
    }

    /// Low-cardinality name of the reason, for metric labels and dead-letter headers.
    pub fn kind(&self) -> &'static str {
        self.reason.kind()
    }
}

/// Why a value was rejected.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Reason {
    #[error("invalid JSON: {0}")]
    Syntax(String),
    #[error("is missing")]
    Missing,
    #[error("is empty")]
    Empty,
    #[error("{found} is not {expected}")]
    WrongType {
        found: String,
        expected: &'static str,
    },
    #[error(
        "{0:?} is not a date (expected yyyyMMddHHmmss in Vietnam time, or ISO-8601 with an offset)"
    )]
    BadDate(String),
    #[error("{value:?} is outside the accepted years {min}-{max}")]
    DateOutOfRange { value: String, min: i32, max: i32 },
    #[error("{value} is not {expected}")]
    UnknownCode {
        value: String,
        expected: &'static str,
    },
    #[error("{0}")]
    Schema(String),
    #[error("{0}")]
    Inconsistent(String),
    #[error("unknown service {0:?} (expected DongBoHoSoMC or CapNhatTienDoHoSoMC)")]
    UnknownService(String),
    #[error(
        "holds no date to take the event time from (need at least NgayNopHoSo or NgayTiepNhan)"
    )]
    NoEventTime,
    #[error("temporarily unavailable: {0}")]
    Unavailable(String),
    /// A decoder bug met this message. Permanent: the same bytes fail the same way, so the
    /// message is dead-lettered instead of stopping its partition.
    #[error("the decoder failed on this message: {0}")]
    Internal(String),
}

impl Reason {
    pub fn kind(&self) -> &'static str {
        match self {
            Reason::Syntax(_) => "syntax",
            Reason::Missing => "missing",
            Reason::Empty => "empty",
            Reason::WrongType { .. } => "wrong_type",
            Reason::BadDate(_) => "bad_date",
            Reason::DateOutOfRange { .. } => "date_out_of_range",
            Reason::UnknownCode { .. } => "unknown_code",
            Reason::Schema(_) => "schema",
            Reason::Inconsistent(_) => "inconsistent",
            Reason::UnknownService(_) => "unknown_service",
            Reason::NoEventTime => "no_event_time",
            Reason::Unavailable(_) => "unavailable",
            Reason::Internal(_) => "internal",
        }
    }
}

/// A JSON path built on the stack while decoding; it is only turned into a string when
/// an error needs it, so the happy path never allocates for it.
#[derive(Clone, Copy)]
pub struct Loc<'p> {
    parent: Option<&'p Loc<'p>>,
    seg: Seg<'p>,
}

#[derive(Clone, Copy)]
enum Seg<'p> {
    Root,
    Key(&'p str),
    Index(usize),
}

impl<'p> Loc<'p> {
    pub const ROOT: Loc<'static> = Loc {
        parent: None,
        seg: Seg::Root,
    };

    pub fn key(&'p self, key: &'p str) -> Loc<'p> {
        Loc {
            parent: Some(self),
            seg: Seg::Key(key),
        }
    }

    pub fn index(&'p self, index: usize) -> Loc<'p> {
        Loc {
            parent: Some(self),
            seg: Seg::Index(index),
        }
    }

    pub fn error(&self, reason: Reason) -> DecodeError {
        DecodeError::new(self.to_string(), reason)
    }
}

impl fmt::Display for Loc<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(parent) = self.parent {
            parent.fmt(f)?;
        }
        match self.seg {
            Seg::Root => Ok(()),
            Seg::Key(k) if self.parent.is_some_and(|p| !matches!(p.seg, Seg::Root)) => {
                write!(f, ".{k}")
            }
            Seg::Key(k) => f.write_str(k),
            Seg::Index(i) => write!(f, "[{i}]"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_read_like_json_paths() {
        let root = Loc::ROOT;
        let data = root.key("data");
        let third = data.index(3);
        let field = third.key("NgayTiepNhan");
        assert_eq!(field.to_string(), "data[3].NgayTiepNhan");
        let arr = root.index(0);
        assert_eq!(arr.key("MaHoSo").to_string(), "[0].MaHoSo");
        let e = root.error(Reason::Syntax("EOF".into()));
        assert_eq!(e.to_string(), "$: invalid JSON: EOF");
        let e = field.error(Reason::BadDate("20231345".into()));
        assert_eq!(
            e.to_string(),
            "data[3].NgayTiepNhan: \"20231345\" is not a date (expected yyyyMMddHHmmss in Vietnam time, or ISO-8601 with an offset)"
        );
        assert_eq!(e.class(), ErrorClass::Permanent);
        assert_eq!(e.kind(), "bad_date");
    }
}
