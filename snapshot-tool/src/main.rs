//! `snapshot-tool`: dispatch only; the work is in the library's `cli` module.

fn main() -> std::process::ExitCode {
    snapshot_tool::cli::main()
}
