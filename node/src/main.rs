//! The `dynakv-node` binary; see `dynakv_node::cli`.

/// mimalloc: a node allocates and frees small buffers for every request; glibc's malloc
/// took about a sixth of a node's CPU under load (docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    dynakv_node::cli::main()
}
