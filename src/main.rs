//! `outpost`: the node, the CLI and the client agent, in one binary.
//! `main` parses the command line and calls into the modules; it holds no logic of its own.

use std::process::ExitCode;

use clap::Parser;
use outpost::cli;

fn main() -> ExitCode {
    outpost::shared::process::tune_allocator();
    let args = cli::Cli::parse();
    let default_level = if args.is_long_running() {
        "info"
    } else {
        "warn"
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level)),
        )
        .with_writer(std::io::stderr)
        .init();
    outpost::node::raise_fd_limit();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(cli::run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line, with the chain of causes, each once.
            eprintln!("error: {}", outpost::shared::text::error_line(&e));
            ExitCode::FAILURE
        }
    }
}
