//! The `dynakv` binary; see `dynakv_client::cli`.

/// mimalloc: the bench and the lab allocate per request, like a node.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    dynakv_client::cli::main()
}
