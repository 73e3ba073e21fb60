//! Output helpers: tables, sizes, times, JSON and progress bars.

use comfy_table::{presets, ContentArrangement, Table};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use quackfs::error::{Error, Result};
use std::io::IsTerminal;

/// The error and its sources on one line.
pub fn one_line(e: &Error) -> String {
    let mut msg = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        let s_text = s.to_string();
        if !msg.contains(&s_text) {
            msg.push_str(": ");
            msg.push_str(&s_text);
        }
        src = s.source();
    }
    msg.replace('\n', " ")
}

/// A table with the given header, plain ASCII-free borders, fitting the terminal.
pub fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_style(presets::NOTHING)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(header.to_vec());
    t
}

/// Writes one line to stdout. Unlike `println!`, a failed write (a full disk, a closed file) is
/// an error the command returns, never a panic.
pub fn write_line(args: std::fmt::Arguments) -> Result<()> {
    use std::io::Write;
    writeln!(std::io::stdout().lock(), "{args}").map_err(Error::Output)
}

/// `println!` for command output: `outln!("…", …)` writes a line to stdout and returns the
/// write error from the enclosing function (`?`).
macro_rules! outln {
    () => {
        $crate::cli::output::write_line(format_args!(""))?
    };
    ($($arg:tt)*) => {
        $crate::cli::output::write_line(format_args!($($arg)*))?
    };
}
pub(crate) use outln;

/// Prints a table to stdout, trimming the trailing spaces comfy-table leaves.
pub fn print_table(t: &Table) -> Result<()> {
    for line in t.to_string().lines() {
        outln!("{}", line.trim_end());
    }
    Ok(())
}

/// Prints a value as pretty JSON on stdout.
pub fn print_json<T: serde::Serialize>(v: &T) -> Result<()> {
    let s = serde_json::to_string_pretty(v)
        .map_err(|e| Error::Invalid(format!("cannot encode JSON: {e}")))?;
    outln!("{s}");
    Ok(())
}

/// Human-readable byte size.
pub fn size(bytes: i64) -> String {
    bytesize::ByteSize::b(bytes.max(0) as u64)
        .display()
        .iec()
        .to_string()
}

/// Local time for tables.
pub fn time(ms: i64) -> String {
    chrono::DateTime::<chrono::Utc>::from_timestamp_millis(ms)
        .map(|t| {
            t.with_timezone(&chrono::Local)
                .format("%Y-%m-%d %H:%M:%S")
                .to_string()
        })
        .unwrap_or_else(|| ms.to_string())
}

/// A progress bar drawn on stderr only when stdout is a terminal.
pub fn progress(what: &str, quiet: bool) -> ProgressBar {
    if quiet || !std::io::stdout().is_terminal() {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(
        "{msg:>10} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
    ) {
        pb.set_style(style.progress_chars("=> "));
    }
    pb.set_message(what.to_string());
    pb
}
