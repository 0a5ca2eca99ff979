fn main() -> std::process::ExitCode {
    dynakv_node::cli::main()
}
