//! The ingestor caps its buffers by what `EventBatchBuilder::allocated_bytes` says they
//! hold: checked here against what the builder really asks the allocator for.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use common::{decode, fixture};
use sohoa_schemas::{events_schema, DecoderKind, DossierEvent, EventBatchBuilder, Lineage};

/// Counts the bytes this thread holds, so that the test harness's other threads do not
/// disturb the count.
struct Counting;

thread_local! {
    static HELD: Cell<isize> = const { Cell::new(0) };
}

fn count(bytes: isize) {
    let _ = HELD.try_with(|h| h.set(h.get() + bytes));
}

// SAFETY: every call is passed on to the system allocator unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size() as isize);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        count(-(layout.size() as isize));
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(layout.size() as isize);
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size as isize - layout.size() as isize);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn held() -> usize {
    HELD.with(|h| h.get()) as usize
}

fn events() -> Vec<DossierEvent<'static>> {
    [
        "dvcqg/samples-envelope.json",
        "dvcqg/messy-record.json",
        "dvcqg/progress-envelope.json",
        "dvcqg/array-one-bad.json",
    ]
    .into_iter()
    .flat_map(|f| decode(DecoderKind::Dvcqg, fixture(f)).events)
    .collect()
}

fn lineage(i: usize) -> Lineage<'static> {
    Lineage {
        topic: "dossiers.dvcqg",
        partition: (i % 3) as i32,
        offset: 1000 + i as i64,
        ingested_at: 1_700_000_000_000_000 + i as i64,
        arrived_at: 1_699_999_999_000_000 + i as i64,
    }
}

#[test]
fn a_builder_counts_every_byte_it_asks_the_allocator_for() {
    let events = events();
    assert!(events.iter().any(|e| !e.supplements.is_empty()));
    assert!(events.iter().any(|e| e.procedure_code.is_none()));
    // Made once per process and kept: not a builder's.
    events_schema();
    let before = held();
    let mut b = Box::new(EventBatchBuilder::new());
    let empty = b.allocated_bytes();
    assert_eq!(empty, held() - before, "an empty builder");
    assert_eq!(empty, std::mem::size_of::<EventBatchBuilder>());
    let mut rows = 0;
    for upto in [1usize, 2, 3, 10, 33, 100, 513, 1000, 5000, 20000] {
        while rows < upto {
            b.append(&events[rows % events.len()], &lineage(rows));
            rows += 1;
        }
        assert_eq!(b.allocated_bytes(), held() - before, "{rows} rows");
        if rows == 1 {
            // The least each of a replica's (partition, date) buffers costs.
            assert!(b.allocated_bytes() < 8 * 1024, "{}", b.allocated_bytes());
        }
    }
    // Finishing hands the columns over as they are: the batch holds what the builder held.
    let batch = b.finish().unwrap();
    assert_eq!(batch.num_rows(), rows);
    assert_eq!(b.allocated_bytes(), empty);
    assert!(batch.get_array_memory_size() <= held() - before);
    drop(batch);
    assert_eq!(held() - before, empty);
    drop(b);
    assert_eq!(held(), before);
}
