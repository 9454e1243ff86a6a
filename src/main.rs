//! The `reclaim` binary: parses the command line and starts what was asked. All logic lives in the
//! libraries (`reclaim-plugin`, `reclaim-gateway`, `reclaim-common`).

mod admin;
mod cli;

fn main() -> std::process::ExitCode {
    cli::run()
}
