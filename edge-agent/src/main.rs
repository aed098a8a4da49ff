//! The `weir` binary: parses flags and hands over to [`weir_agent::cli`].

fn main() -> std::process::ExitCode {
    weir_agent::cli::main()
}
