//! The `dynakv` binary; see `dynakv_client::cli`.
fn main() -> std::process::ExitCode {
    dynakv_client::cli::main()
}
