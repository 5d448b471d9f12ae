//! Storage of the ingested events: the `events/` Delta Lake table, and the checks a writer
//! makes of the store before it commits anything.

pub mod events;
pub mod probe;
pub mod table;

// The snapshot readers pin a run to: the kernel's own handle, not a copy of it.
pub use delta_kernel::SnapshotRef;
pub use probe::{check_conditional_put, ProbeError};
pub use table::{
    off_runtime, Commit, DataFile, LiveFile, Operation, Outcome, StatsPlan, Table, TableError,
};
