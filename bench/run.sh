#!/usr/bin/env bash
# Runs every benchmark in bench/ (each bench/*.sh except lib.sh and run.sh), in name order,
# against the release binary, building it first if it is missing. `make bench` calls this.
#
#   bash bench/run.sh                 all benchmarks
#   bash bench/run.sh import_export   only the named ones
#
# Environment: QUACKFS (binary, default target/release/quackfs; set it to skip the build),
# BENCH_DIR (default /tmp/quackfs-bench) and the variables each benchmark documents.
# Exits non-zero if a benchmark fails; a number that misses its target is reported, not an error.
set -euo pipefail

BENCH_NAME=run
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$BENCH_ROOT"

if [ "$QUACKFS" = target/release/quackfs ] && [ ! -x "$QUACKFS" ]; then
    log "building the release binary (cargo build --release)"
    cargo build --release
fi
resolve_quackfs
export QUACKFS

benches=()
if [ $# -gt 0 ]; then
    for name in "$@"; do
        f="bench/${name%.sh}.sh"
        [ -f "$f" ] || die "no benchmark $f"
        benches+=("$f")
    done
else
    for f in bench/*.sh; do
        case "$(basename "$f")" in
            lib.sh | run.sh) ;;
            *) benches+=("$f") ;;
        esac
    done
fi

failed=()
for f in "${benches[@]}"; do
    log "== $f"
    if ! bash "$f"; then
        log "$f failed"
        failed+=("$f")
    fi
done
if [ ${#failed[@]} -gt 0 ]; then
    die "failed: ${failed[*]}"
fi
log "done: ${#benches[@]} benchmark(s); machine-readable results in $BENCH_DIR/results.jsonl"
