//! The `dynakv-node` binary; see `dynakv_node::cli`.
fn main() -> std::process::ExitCode {
    dynakv_node::cli::main()
}
