//! Why an agency reference was rejected. Every error about an entry names it: where it
//! sits in the file (`agencies[3]` in TOML, `line 5` in CSV, `row 3` in Parquet) and its
//! code.

/// Why an agency reference was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AgencyError {
    /// The file cannot be read as the format its name says (TOML, CSV or Parquet), or its
    /// top level is not `agencies = [...]`.
    #[error("agency reference: {0}")]
    File(String),
    /// One entry is malformed: an unknown, missing or mistyped field, or a bad value.
    #[error("agency reference, {at} (code {code:?}): {message}")]
    Entry {
        /// Where the entry is: `agencies[3]`, `line 5` or `row 3`.
        at: String,
        /// Its code as written (empty when it has none).
        code: String,
        /// What is wrong, naming the field.
        message: String,
    },
    /// The same code twice with the same validity: a copy, not a new version.
    #[error("agency reference: code {code:?} appears twice with the same validity, at {first} and {second}; give a new version of a code its own valid_from")]
    DuplicateCode {
        code: String,
        first: String,
        second: String,
    },
    /// Two versions of one code valid on the same day.
    #[error("agency reference: code {code:?} at {first} ({first_range}) and at {second} ({second_range}): the validity ranges overlap; versions of one code must follow each other")]
    OverlappingValidity {
        code: String,
        first: String,
        first_range: String,
        second: String,
        second_range: String,
    },
    /// A successor (or a province) that no entry defines.
    #[error("agency reference, {at} (code {code:?}): {what} {missing:?} is not in the reference")]
    UnknownCode {
        at: String,
        code: String,
        /// `successor` or `province`.
        what: &'static str,
        missing: String,
    },
    /// Successors that lead back to where they started.
    #[error("agency reference: successors form a cycle: {}", .codes.join(" → "))]
    Cycle {
        /// The codes around the cycle, the first repeated at the end.
        codes: Vec<String>,
    },
    /// `aggregate.province` names no province-level entry, or is empty while the reference
    /// has no single current province to default to.
    #[error("aggregate.province: {0}")]
    Province(String),
}
