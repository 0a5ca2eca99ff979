fn main() -> std::process::ExitCode {
    dynakv_client::cli::main()
}
