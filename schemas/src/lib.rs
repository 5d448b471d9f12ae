//! The shared schemas of sohoa: the canonical dossier event, its JSON Schema, the Arrow
//! schema derived from it, and the decoders that turn source formats into it.
//!
//! Every service depends on this crate and on nothing else for the shape of the data:
//! the ingestor decodes with it and writes [`batch::EventBatchBuilder`] batches; the
//! aggregator reads the columns [`json_schema::events_schema`] declares.

pub mod batch;
pub mod decode;
pub mod error;
pub mod event;
pub mod json_schema;
pub mod normalize;
pub mod pseudonym;

pub use batch::EventBatchBuilder;
pub use decode::{build as build_decoder, DecodeOutput, Decoder, DecoderContext, DecoderKind};
pub use error::{DecodeError, ErrorClass, Reason};
pub use event::{DossierEvent, Lineage};
pub use json_schema::events_schema;
pub use normalize::{Warning, Warnings};
pub use pseudonym::Pseudonymizer;
