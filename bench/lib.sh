# shellcheck shell=bash
# Shared helpers for the quackfs benchmarks (sourced by bench/*.sh, not run directly).
#
# Conventions: every benchmark works in a fresh temp directory under $BENCH_DIR (local disk, never
# the user's data dir), prints a human table on stdout and appends one JSON line per run to
# $BENCH_DIR/results.jsonl. Progress notes go to stderr.

BENCH_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH_DIR=${BENCH_DIR:-/tmp/quackfs-bench}
QUACKFS=${QUACKFS:-target/release/quackfs}
PYTHON=${PYTHON:-python3}
# Measurements per configuration; the median is reported.
BENCH_REPS=${BENCH_REPS:-3}

log() { printf '%s [%s] %s\n' "$(date +%H:%M:%S)" "${BENCH_NAME:-bench}" "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

# Resolves $QUACKFS to an absolute path (relative paths are relative to the repository root).
resolve_quackfs() {
    case "$QUACKFS" in
        /*) ;;
        */*) QUACKFS="$BENCH_ROOT/$QUACKFS" ;;
        *) QUACKFS=$(command -v "$QUACKFS") || die "quackfs binary '$QUACKFS' not found" ;;
    esac
    [ -x "$QUACKFS" ] || die "$QUACKFS is not built: run 'cargo build --release' (or bash bench/run.sh)"
}

# Creates a fresh work directory under $BENCH_DIR, removed on exit (also on error or Ctrl-C),
# and points quackfs at it: data dir, config dir and no inherited catalog/store/repo settings.
# Sets WORK.
setup_workdir() {
    mkdir -p "$BENCH_DIR"
    WORK=$(mktemp -d "$BENCH_DIR/run.XXXXXX")
    trap cleanup_workdir EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    mkdir -p "$WORK/config"
    export XDG_CONFIG_HOME="$WORK/config"
    unset QUACKFS_CATALOG QUACKFS_STORE QUACKFS_REPO QUACKFS_HOME
    export QUACKFS_AUTHOR=bench@localhost
}

cleanup_workdir() {
    if [ -n "${WORK:-}" ] && [ -d "$WORK" ] && [ -z "${BENCH_KEEP:-}" ]; then
        rm -rf "$WORK"
    elif [ -n "${BENCH_KEEP:-}" ]; then
        log "kept $WORK (BENCH_KEEP is set)"
    fi
}

# Filesystem type of a path (ext4, xfs, tmpfs, …).
fs_type() {
    findmnt -no FSTYPE -T "$1" 2>/dev/null || df -T "$1" | awk 'NR == 2 {print $2}'
}

# Whether the page cache can be dropped here (root with a writable /proc/sys/vm).
CAN_DROP_CACHES=
probe_drop_caches() {
    if sync && { echo 3 >/proc/sys/vm/drop_caches; } 2>/dev/null; then
        CAN_DROP_CACHES=1
    fi
}

# Writes back dirty pages; in cold mode also empties the page cache so the next command reads
# from disk. Called before every timed command, for both sides of a comparison alike.
prepare_cache() { # MODE: warm | cold
    sync
    if [ "$1" = cold ]; then
        echo 3 >/proc/sys/vm/drop_caches
    fi
}

# Runs a command, timed; stdout/stderr go to $WORK/last.out / last.err. Sets T_REAL, T_USER,
# T_SYS (seconds). Fails loudly with the command's stderr if it fails.
timed() {
    local tf="$WORK/last.time" TIMEFORMAT='%3R %3U %3S' rc=0
    { time "$@" >"$WORK/last.out" 2>"$WORK/last.err"; } 2>"$tf" || rc=$?
    if [ "$rc" -ne 0 ]; then
        log "command failed (exit $rc): $*"
        sed 's/^/    /' "$WORK/last.err" >&2
        return "$rc"
    fi
    # shellcheck disable=SC2034 # read by the benchmarks
    read -r T_REAL T_USER T_SYS <"$tf"
}

# Median of the numbers given as arguments.
median() {
    printf '%s\n' "$@" | sort -g | awk '{a[NR] = $1} END {
        if (NR == 0) { print "nan"; exit }
        if (NR % 2) print a[(NR + 1) / 2]; else printf "%.3f\n", (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}

# a / b with 3 decimals ("nan" if b is zero).
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b + 0 == 0) print "nan"; else printf "%.3f\n", a / b }'; }

# PASS if value <= target, else MISS.
verdict() { awk -v v="$1" -v t="$2" 'BEGIN { print (v != "nan" && v + 0 <= t + 0) ? "PASS" : "MISS" }'; }

# Bytes as MiB with 1 decimal.
mib() { awk -v b="$1" 'BEGIN { printf "%.1f MiB\n", b / 1048576 }'; }

# MB/s for BYTES in SECONDS.
mbps() { awk -v b="$1" -v s="$2" 'BEGIN { if (s + 0 == 0) print "-"; else printf "%.0f MB/s\n", b / s / 1e6 }'; }

# Sum of the sizes of the regular files under a directory (apparent sizes, bytes).
dir_bytes() {
    if [ -d "$1" ]; then
        find "$1" -type f -printf '%s\n' | awk '{s += $1} END {print s + 0}'
    else
        echo 0
    fi
}

# Machine description, one "key: value" per line.
machine_info() {
    local cpu
    cpu=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo 2>/dev/null || true)
    echo "host:        $(hostname) ($(uname -sr))"
    echo "cpu:         $(nproc) cores${cpu:+, $cpu}"
    echo "memory:      $(awk '/^MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)"
    echo "load:        $(cut -d' ' -f1-3 /proc/loadavg) (1/5/15 min; other work on the machine skews the times)"
    echo "bench dir:   $BENCH_DIR ($(fs_type "$BENCH_DIR"), $(df -h --output=avail "$BENCH_DIR" | tail -n 1 | tr -d ' ') free)"
    echo "quackfs:     $QUACKFS ($("$QUACKFS" --version 2>/dev/null || echo '?'), git $(git_rev))"
    echo "page cache:  $(if [ -n "$CAN_DROP_CACHES" ]; then echo 'can be dropped (cold runs measured)'; else echo 'cannot be dropped (warm runs only)'; fi)"
}

git_rev() {
    local rev
    rev=$(git -C "$BENCH_ROOT" rev-parse --short HEAD 2>/dev/null) || {
        echo unknown
        return
    }
    if [ -n "$(git -C "$BENCH_ROOT" status --porcelain -- src Cargo.toml Cargo.lock 2>/dev/null)" ]; then
        rev="$rev+dirty"
    fi
    echo "$rev"
}

# JSON string literal.
json_str() { "$PYTHON" -c 'import json, sys; print(json.dumps(sys.argv[1]))' "$1"; }

# Appends one JSON object (built from KEY=VALUE arguments; values that look like numbers stay
# numbers, "true"/"false" stay booleans, the rest become strings) to $BENCH_DIR/results.jsonl.
append_result() {
    "$PYTHON" - "$BENCH_DIR/results.jsonl" "$@" <<'PY'
import json, re, sys
out, pairs = sys.argv[1], sys.argv[2:]
obj = {}
for p in pairs:
    k, _, v = p.partition("=")
    if re.fullmatch(r"-?\d+", v):
        obj[k] = int(v)
    elif re.fullmatch(r"-?\d+\.\d*(e-?\d+)?", v):
        obj[k] = float(v)
    elif v in ("true", "false"):
        obj[k] = v == "true"
    else:
        obj[k] = v
with open(out, "a") as f:
    f.write(json.dumps(obj, sort_keys=False) + "\n")
PY
}
