//! The process's memory: which allocator serves Rust, and how soon freed memory goes back
//! to the system. A replica's peak RSS is what its cap is judged by, so memory that is
//! free but still mapped counts as much as memory in use.

use std::time::Duration;

/// In the ingest profile, glibc's allocator took a sixth of a replica's CPU: the poll
/// thread allocates each payload and a shard thread frees it, and glibc consolidates and
/// locks arenas on that path. mimalloc's thread-local heaps took a twelfth, for 10 to 15%
/// more messages per second in alternating runs (BENCHMARKS.md), at about 60 MB more peak
/// RSS. librdkafka, being C, keeps glibc's allocator.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_arena_eager_commit` and `mi_option_purge_delay` in mimalloc 3's
/// `mi_option_t` (`include/mimalloc.h`); the bindings name no constants for them.
const MI_OPTION_ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// mimalloc's options that make freed memory go back to the system sooner, each with
/// the environment variable that still wins over it.
///
/// - Arena eager commit: by default, on a system that overcommits (Linux), mimalloc
///   commits its 1 GiB arenas up front, and then never purges their freed pages. The
///   demo's packed feed left 540 MB resident with 30 MB live; without eager commit, 108.
/// - Purge delay: mimalloc 3 keeps freed memory for a second (1,000 ms). A flush frees a
///   shard's buffers at once and the next ones grow meanwhile, so a replica held both:
///   at a 64 MB buffer cap, on a feed spread over 120 dates, peak RSS was 318 to 335 MB
///   at 1,000 ms, 255 to 264 MB at 10 ms (mimalloc 2's default) for the same CPU per
///   message, and 245 MB at 0 for 30% more CPU.
const OPTIONS: [(libmimalloc_sys::mi_option_t, &str, std::ffi::c_long); 2] = [
    (
        MI_OPTION_ARENA_EAGER_COMMIT,
        "MIMALLOC_ARENA_EAGER_COMMIT",
        0,
    ),
    (MI_OPTION_PURGE_DELAY, "MIMALLOC_PURGE_DELAY", 10),
];

/// Set before `main`, from the loader's constructors: mimalloc reserves its first arena
/// at the first allocation, which the Rust runtime makes before `main`, and an arena
/// reserved while eager commit is on keeps that setting.
#[used]
#[link_section = ".init_array"]
static SET_OPTIONS_BEFORE_MAIN: extern "C" fn() = {
    extern "C" fn set() {
        purge_freed_memory_sooner();
    }
    set
};

/// Set `OPTIONS`, in order: reading an environment variable that is set allocates, and
/// eager commit must be off before the first allocation.
fn purge_freed_memory_sooner() {
    for (option, env, value) in OPTIONS {
        if std::env::var_os(env).is_none() {
            // SAFETY: mimalloc's options may be set at any time from any thread.
            unsafe { libmimalloc_sys::mi_option_set(option, value) };
        }
    }
}

/// How often glibc's heaps are trimmed.
const TRIM_EVERY: Duration = Duration::from_secs(1);

/// Start giving glibc's freed memory back; call first thing in `main`.
pub fn tune() {
    trim_glibc_heaps_periodically();
}

/// librdkafka allocates its fetch responses, produce queues and the mock cluster's logs
/// with glibc's malloc, on a dozen threads. glibc gives freed memory back only from the
/// top of a heap, so one live block above a freed response keeps the pages below it:
/// after the demo's ingest the process held 480 MB with nothing live, 860 MB of it in
/// the main heap. `malloc_trim` also releases free pages inside the heaps. Once a
/// second costs a walk over the free lists, which is cheap next to a second of polling.
fn trim_glibc_heaps_periodically() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let spawned = std::thread::Builder::new()
            .name("malloc-trim".into())
            .spawn(|| loop {
                std::thread::sleep(TRIM_EVERY);
                trim_glibc_heaps();
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "no thread to trim glibc's heaps: freed memory may stay mapped");
        }
    }
}

/// Give back now what this thread freed: mimalloc purges a thread's freed pages only
/// when that thread next allocates, and glibc's heaps once a second. For after dropping
/// something large on a thread that then mostly waits.
pub fn give_back_freed() {
    // SAFETY: collecting is allowed at any time; `force` also purges pages not yet due.
    unsafe { libmimalloc_sys::mi_collect(true) };
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    trim_glibc_heaps();
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim_glibc_heaps() {
    // SAFETY: malloc_trim may be called from any thread at any time; it takes each
    // arena's lock while it walks that arena.
    unsafe { libc::malloc_trim(0) };
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The options are set before `main`, and do what they are for: 256 MB that Rust
    /// frees is given back to the system, not kept resident.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn memory_rust_frees_goes_back_to_the_system() {
        if OPTIONS
            .iter()
            .any(|(_, env, _)| std::env::var_os(env).is_some())
        {
            return;
        }
        for (option, env, value) in OPTIONS {
            // SAFETY: reading an option is allowed at any time.
            assert_eq!(
                unsafe { libmimalloc_sys::mi_option_get(option) },
                value,
                "{env}"
            );
        }
        let (held, released) = std::thread::spawn(|| {
            let blocks: Vec<Vec<u8>> = (0..65_536).map(|_| vec![1u8; 4096]).collect();
            let held = resident();
            drop(blocks);
            give_back_freed();
            (held, resident())
        })
        .join()
        .expect("the allocating thread");
        let given_back = held.saturating_sub(released);
        assert!(
            given_back > 128 << 20,
            "{given_back} bytes of 256 MB freed went back"
        );
    }

    /// Resident memory of this process, in bytes.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn resident() -> usize {
        let statm = std::fs::read_to_string("/proc/self/statm").expect("/proc/self/statm");
        let pages: usize = statm
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse().ok())
            .expect("resident pages in statm");
        // SAFETY: sysconf has no preconditions.
        pages * unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize
    }

    /// 256 MB freed under a block still in use stays resident until the heaps are trimmed,
    /// as librdkafka's freed responses did.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn trimming_gives_back_memory_freed_below_a_live_block() {
        const BLOCK: usize = 4096;
        const BLOCKS: usize = 65_536;
        // A thread of its own, so that the blocks come from one arena that nothing else
        // in the test binary uses meanwhile.
        let (held, released) = std::thread::spawn(|| {
            // SAFETY: every block is written within its size and freed exactly once.
            unsafe {
                let blocks: Vec<*mut libc::c_void> = (0..BLOCKS)
                    .map(|_| {
                        let b = libc::malloc(BLOCK);
                        assert!(!b.is_null());
                        std::ptr::write_bytes(b.cast::<u8>(), 1, BLOCK);
                        b
                    })
                    .collect();
                let live = libc::malloc(BLOCK);
                for b in blocks {
                    libc::free(b);
                }
                let held = resident();
                trim_glibc_heaps();
                let released = resident();
                libc::free(live);
                (held, released)
            }
        })
        .join()
        .expect("the allocating thread");
        let given_back = held.saturating_sub(released);
        assert!(
            given_back > BLOCK * BLOCKS / 2,
            "trimming gave back {given_back} bytes of {} freed",
            BLOCK * BLOCKS
        );
    }
}
