use super::output::{print_json, print_table, size, table};
use super::Ctx;
use quackfs::error::{Error, Result};

/// Delete layers and objects nothing needs any more (all databases of the catalog).
///
/// A commit stays readable if a branch or tag points at it, if a branch pointed at it or it was
/// made within --retain, if a clone starts from it, or if a mount pins it; older commits expire.
/// Unneeded layers are marked first and deleted only when --grace has passed since the mark.
#[derive(Debug, clap::Args)]
pub struct GcArgs {
    /// Keep history this long, e.g. 7d, 12h, 0s
    #[arg(long, default_value = "7d", value_name = "DURATION", value_parser = super::parse_duration)]
    pub retain: String,
    /// Wait this long between marking a layer and deleting it, e.g. 1h, 0s
    #[arg(long, default_value = "1h", value_name = "DURATION", value_parser = super::parse_duration)]
    pub grace: String,
    /// Show what would go, and how many bytes, without deleting anything
    #[arg(long)]
    pub dry_run: bool,
}

fn duration_ms(flag: &str, text: &str) -> Result<i64> {
    humantime::parse_duration(text)
        .map(|d| d.as_millis().min(i64::MAX as u128) as i64)
        .map_err(|e| {
            Error::Invalid(format!(
                "--{flag} {text:?}: {e} (examples: 7d, 12h, 30m, 0s)"
            ))
        })
}

pub async fn run(ctx: &Ctx, a: GcArgs) -> Result<()> {
    let retain = duration_ms("retain", &a.retain)?;
    let grace = duration_ms("grace", &a.grace)?;
    let engine = ctx.engine().await?;
    let pb = ctx.progress("gc");
    let started = std::time::Instant::now();
    let r = engine.gc(retain, grace, a.dry_run, &pb).await?;
    pb.finish_and_clear();
    if ctx.json {
        return print_json(&r);
    }
    let mut t = table(&["", "COUNT", "BYTES"]);
    let verb = if a.dry_run { "would delete" } else { "deleted" };
    t.add_row(vec![
        "readable commits".into(),
        r.readable_commits.to_string(),
        String::new(),
    ]);
    t.add_row(vec![
        "expired commits".into(),
        r.expired_commits.to_string(),
        String::new(),
    ]);
    t.add_row(vec![
        "images written".into(),
        r.images_written.to_string(),
        String::new(),
    ]);
    t.add_row(vec![
        "live layers".into(),
        r.live_layers.to_string(),
        String::new(),
    ]);
    t.add_row(vec![
        format!("layers {verb}"),
        r.deleted_layers.to_string(),
        size(r.deleted_bytes as i64),
    ]);
    t.add_row(vec![
        "layers waiting for the grace".into(),
        r.waiting_layers.to_string(),
        size(r.waiting_bytes as i64),
    ]);
    t.add_row(vec![
        format!("orphan objects {verb}"),
        r.orphans_deleted.to_string(),
        size(r.orphan_bytes as i64),
    ]);
    if r.unproven_objects > 0 {
        t.add_row(vec![
            "unowned objects kept".into(),
            r.unproven_objects.to_string(),
            String::new(),
        ]);
    }
    print_table(&t)?;
    ctx.note(format!("gc took {:.1}s", started.elapsed().as_secs_f64()));
    Ok(())
}
