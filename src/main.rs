//! The `quackfs` command: parses arguments, sets up logging and the async runtime, runs one
//! subcommand, and turns its error into one `error:` line (plus an optional `hint:`) and the
//! documented exit code of its kind (`quackfs::error::exit`).

mod cli;

use clap::Parser;
use quackfs::error::{exit, Error};
use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

fn main() -> ExitCode {
    // Die quietly on a closed pipe (`quackfs log | head`), like other command-line tools.
    // SAFETY: setting a signal disposition before any thread starts.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let args = match cli::Cli::try_parse() {
        Ok(args) => args,
        Err(e) => parse_failed(e),
    };
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
            let _ = writeln!(
                std::io::stderr(),
                "error: cannot start the async runtime: {e}"
            );
            return ExitCode::from(exit::ERROR);
        }
    };
    let result = runtime.block_on(cli::run(args));
    // Blocking helpers of an interrupted command must not hold the exit up.
    runtime.shutdown_timeout(Duration::from_secs(5));
    // Whatever is still buffered must reach stdout too: a lost line is an error, not exit 0.
    let result = result.and_then(|()| std::io::stdout().flush().map_err(Error::Output));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Nothing sensible is left to do if stderr itself cannot be written.
            let mut err = std::io::stderr().lock();
            let _ = writeln!(err, "error: {}", cli::one_line(&e));
            if let Some(hint) = e.hint() {
                let _ = writeln!(err, "hint: {hint}");
            }
            ExitCode::from(e.exit_code())
        }
    }
}

/// Prints clap's error (or help, or version) and exits with its code, adding a hint where a
/// common ordering mistake leads to a puzzling error: `diff --rows A B` gives `--rows` the
/// revisions as table names.
fn parse_failed(e: clap::Error) -> ! {
    let _ = e.print();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let word = |w: &str| args.iter().any(|a| a == w);
    if e.kind() == clap::error::ErrorKind::MissingRequiredArgument && word("diff") && word("--rows")
    {
        let _ = writeln!(
            std::io::stderr(),
            "hint: --rows takes the table names that follow it; put it after the revisions \
             (quackfs diff main~1 main --rows)"
        );
    }
    std::process::exit(e.exit_code())
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
        // Colours on a terminal only: a daemon's log file gets plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}
