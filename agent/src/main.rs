//! The `kdelta` binary: parse the command line and run it (see `kdelta --help`).

fn main() -> std::process::ExitCode {
    kdelta::cli::main()
}
