//! The `quackfs` command: parses arguments, sets up logging and the async runtime, runs one
//! subcommand, and turns its error into one `error:` line (plus an optional `hint:`) and exit 1.

mod cli;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    // Die quietly on a closed pipe (`quackfs log | head`), like other command-line tools.
    // SAFETY: setting a signal disposition before any thread starts.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let args = cli::Cli::parse();
    if matches!(args.command, cli::Command::Mount(_)) {
        // A mount outlives its terminal's pipes (`quackfs mount … | tee log`, then Ctrl-C kills
        // tee first): writing to a closed pipe must be an error it ignores, not a signal that
        // kills it before it syncs and unmounts.
        // SAFETY: as above, before any thread starts.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    }
    init_logging(args.global.verbose, args.global.quiet);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(cli::run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            use std::io::Write;
            let mut err = std::io::stderr();
            let _ = writeln!(err, "error: {}", cli::one_line(&e));
            if let Some(hint) = e.hint() {
                let _ = writeln!(err, "hint: {hint}");
            }
            ExitCode::from(1)
        }
    }
}

/// Warnings by default; `-v` info, `-vv` debug, `-vvv` trace; `-q` errors only. `RUST_LOG` wins.
fn init_logging(verbose: u8, quiet: bool) {
    use tracing_subscriber::EnvFilter;
    let level = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        (false, 2) => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("quackfs={level},fuser=error,warn")));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
