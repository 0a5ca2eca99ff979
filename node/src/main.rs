//! The `dynakv-node` binary; see `dynakv_node::cli`.

/// mimalloc: a node allocates and frees small buffers for every request; glibc's malloc
/// took about a sixth of a node's CPU under load (docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    allocator::keep_freed_memory();
    dynakv_node::cli::main()
}

/// How the node's allocator treats memory it has freed.
mod allocator {
    use libmimalloc_sys::mi_option_t;

    /// mimalloc's `mi_option_purge_delay` (its index in v3's `mi_option_e`, which the
    /// Rust bindings do not name; the test below checks it).
    pub(crate) const PURGE_DELAY: mi_option_t = 15;

    /// The environment variable mimalloc reads the same option from.
    const PURGE_DELAY_ENV: &str = "MIMALLOC_PURGE_DELAY";

    /// Keeps freed memory mapped for reuse instead of handing it back to the kernel
    /// (mimalloc's `purge_delay` -1; its default purges pages unused for a second).
    ///
    /// A node's memory use rises and falls in cycles: each memtable fills and is freed
    /// at its flush, request buffers and task futures come and go. Purged pages are
    /// faulted back in on reuse, each a 2 MiB transparent huge page zeroed by the
    /// kernel, and each purge flushes TLBs on every CPU: under load that cost about a
    /// tenth of a node's CPU per put (docs/benchmarks.md). The price is that the
    /// resident size stays at its high-water mark. `MIMALLOC_PURGE_DELAY`, if set,
    /// still decides.
    pub(crate) fn keep_freed_memory() {
        if std::env::var_os(PURGE_DELAY_ENV).is_none() {
            // SAFETY: sets one integer option; mimalloc reads its options with plain
            // loads, and this runs before any thread of ours starts.
            unsafe { libmimalloc_sys::mi_option_set(PURGE_DELAY, -1) }
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        /// The index names `purge_delay`: its documented default (1000 ms in v3) is
        /// what the option at that index holds, and setting it reads back. An upgrade
        /// that renumbers mimalloc's options fails here instead of silently changing
        /// another setting.
        #[test]
        fn the_purge_delay_index_names_mimallocs_purge_delay() {
            if std::env::var_os(PURGE_DELAY_ENV).is_some() {
                return;
            }
            // SAFETY: reads and sets one integer option of the linked mimalloc.
            unsafe {
                assert_eq!(libmimalloc_sys::mi_option_get(PURGE_DELAY), 1000);
                keep_freed_memory();
                assert_eq!(libmimalloc_sys::mi_option_get(PURGE_DELAY), -1);
            }
        }
    }
}
