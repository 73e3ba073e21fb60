#compdef quackfs

autoload -U is-at-least

_quackfs() {
    typeset -A opt_args
    typeset -a _arguments_options
    local ret=1

    if is-at-least 5.2; then
        _arguments_options=(-s -S -C)
    else
        _arguments_options=(-s -C)
    fi

    local context curcontext="$curcontext" state line
    _arguments "${_arguments_options[@]}" : \
'--data-dir=[Data directory\: embedded catalog, objects, cache, local state \[default\: \$XDG_DATA_HOME/quackfs\]]:DIR:_files' \
'--catalog=[Catalog\: sqlite\://PATH or postgres\://USER\:PASS@HOST\:PORT/DB \[default\: sqlite\://DATA_DIR/catalog.sqlite\]]:URL:_default' \
'--store=[Object store\: file\://PATH or s3\://BUCKET\[/PREFIX\] \[default\: file\://DATA_DIR/objects\]]:URL:_default' \
'-r+[Which database \[default\: the one mounted where the current directory is, else the one chosen with \`quackfs use\`\]]:NAME:_default' \
'--repo=[Which database \[default\: the one mounted where the current directory is, else the one chosen with \`quackfs use\`\]]:NAME:_default' \
'--json[Machine-readable JSON output]' \
'*-v[More logging on stderr (repeat for more); RUST_LOG overrides]' \
'*--verbose[More logging on stderr (repeat for more); RUST_LOG overrides]' \
'(-v --verbose)-q[Only errors on stderr]' \
'(-v --verbose)--quiet[Only errors on stderr]' \
'-h[Print help (see more with '\''--help'\'')]' \
'--help[Print help (see more with '\''--help'\'')]' \
'-V[Print version]' \
'--version[Print version]' \
":: :_quackfs_commands" \
"*::: :->quackfs" \
&& ret=0
    case $state in
    (quackfs)
        words=($line[1] "${words[@]}")
        (( CURRENT += 1 ))
        curcontext="${curcontext%:*:*}:quackfs-command-$line[1]:"
        case $line[1] in
            (init)
_arguments "${_arguments_options[@]}" : \
'*--import=[Files to import as the first commit (stored under their base names)]:FILE:_files' \
'-m+[Message of the import commit]:MESSAGE:_default' \
'--message=[Message of the import commit]:MESSAGE:_default' \
'--data-dir=[Data directory\: embedded catalog, objects, cache, local state \[default\: \$XDG_DATA_HOME/quackfs\]]:DIR:_files' \
'--catalog=[Catalog\: sqlite\://PATH or postgres\://USER\:PASS@HOST\:PORT/DB \[default\: sqlite\://DATA_DIR/catalog.sqlite\]]:URL:_default' \
'--store=[Object store\: file\://PATH or s3\://BUCKET\[/PREFIX\] \[default\: file\://DATA_DIR/objects\]]:URL:_default' \
'-r+[Which database \[default\: the one mounted where the current directory is, else the one chosen with \`quackfs use\`\]]:NAME:_default' \
'--repo=[Which database \[default\: the one mounted where the current directory is, else the one chosen with \`quackfs use\`\]]:NAME:_default' \
'--json[Machine-readable JSON output]' \
'*-v[More logging on stderr (repeat for more); RUST_LOG overrides]' \
'*--verbose[More logging on stderr (repeat for more); RUST_LOG overrides]' \
'(-v --verbose)-q[Only errors on stderr]' \
'(-v --verbose)--quiet[Only errors on stderr]' \
'-h[Print help (see more with '\''--help'\'')]' \
'--help[Print help (see more with '\''--help'\'')]' \
'-V[Print version]' \
'--version[Print version]' \
':name -- Name of the database\: letters, digits, '\''.'\'', '\''_'\'' and '\''-'\'', up to 64 characters:_default' \
&& ret=0
;;
(use)
_arguments "${_arguments_options[@]}" : \
'--data-dir=[Data directory\: embedded catalog, objects, cache, local state \[default\: \$XDG_DATA_HOME/quackfs\]]:DIR:_files' \
'--catalog=[Catalog\: sqlite\://PATH or postgres\://USER\:PASS@HOST\:PORT/DB \[default\: sqlite\://DATA_DIR/catalog.sqlite\]]:URL:_default' \
'--store=[Object store\: file\://PATH or s3\://BUCKET\[/PREFIX\] \[default\: file\://DATA_DIR/objects\]]:URL:_default' \
'-r+[Which database \[default\: the one mounted where the current directory is, else the one chosen with \`quackfs use\`\]]:NAME:_default' \
'--repo=[Which database \[default\: the one mounted where the current directory is, else the one chosen with \`quackfs use\`\]]:NAME:_default' \
'--json[Machine-readable JSON output]' \
'*-v[More logging on stderr (repeat for more); RUST_LOG overrides]' \
'*--verbose[More logging on stderr (repeat for more); RUST_LOG overrides]' \
'(-v --verbose)-q[Only errors on stderr]' \
'(-v --verbose)--quiet[Only errors on stderr]' \
'-h[Print help]' \
'--help[Print help]' \
'-V[Print version]' \
'--version[Print version]' \
':target -- REPO or REPO@BRANCH:_default' \
&& ret=0
;;
(repos)
_arguments "${_arguments_options[@]}" : \
'--data-dir=[Data directory\: embedded catalog, objects, cache, local state \[default\: \$XDG_DATA_HOME/quackfs\]]:DIR:_files' \
'--catalog=[Catalog\: sqlite\://PATH or postgres\://USER\:PASS@HOST\:PORT/DB \[default\: sqlite\://DATA_DIR/catalog.sqlite\]]:URL:_default' \
'--store=[Object store\: file\://PATH or s3\://BUCKET\[/PREFIX\] \[default\: file\://DATA_DIR/objects\]]:URL:_default' \
'-r+[Which database \[default\: the one mounted where the current directory is, else the one chosen with \`quackfs use\`\]]:NAME:_default' \
'--repo=[Which database \[default\: the one mounted where the current directory is, else the one chosen with \`quackfs use\`\]]:NAME:_default' \
'--json[Machine-readable JSON output]' \
'*-v[More logging on stderr (repeat for more); RUST_LOG overrides]' \
'*--verbose[More logging on stderr (repeat for more); RUST_LOG overrides]' \
'(-v --verbose)-q[Only errors on stderr]' \
'(-v --verbose)--quiet[Only errors on stderr]' \
'-h[Print help]' \
'--help[Print help]' \
'-V[Print version]' \
'--version[Print version]' \
&& ret=0
;;
(import)
_arguments "${_arguments_options[@]}" : \
'-b+[Branch to commit onto \[default\: the current branch\]]:BRANCH:_default' \
'--branch=[Branch to commit onto \[default\: the current branch\]]:BRANCH:_default' \
'-m+[Commit message \[default\: "import FILE…"\]]:MESSAGE:_default' \
'--message=[Commit message \[default\: "import FILE…"\]]:MESSAGE:_default' \
'--data-dir=[Data directory\: embedded catalog, objects, cache, local state \[default\: \$XDG_DATA_HOME/quackfs\]]:DIR:_files' \
'--catalog=[Catalog\: sqlite\://PATH or postgres\://USER\:PASS@HOST\:PORT/DB \[default\: sqlite\://DATA_DIR/catalog.sqlite\]]:URL:_default' \
'--store=[Object store\: file\://PATH or s3\://BUCKET\[/PREFIX\] \[default\: file\://DATA_DIR/objects\]]:URL:_default' \
'-r+[Which database \[default\: the one mounted where the current directory is, else the one chosen with \`quackfs use\`\]]:NAME:_default' \
'--repo=[Which database \[default\: the one mounted where the current directory is, else the one chosen with \`quackfs use\`\]]:NAME:_default' \
'--json[Machine-readable JSON output]' \
'*-v[More logging on stderr (repeat for more); RUST_LOG overrides]' \
'*--verbose[More logging on stderr (repeat for more); RUST_LOG overrides]' \
'(-v --verbose)-q[Only errors on stderr]' \
'(-v --verbose)--quiet[Only errors on stderr]' \
'-h[Print help (see more with '\''--help'\'')]' \
'--help[Print help (see more with '\''--help'\'')]' \
'-V[Print version]' \
'--version[Print version]' \
'*::files -- Files to import, e.g. analytics.duckdb:_files' \
&& ret=0
;;
(export)
_arguments "${_arguments_options[@]}" : \
'--at=[Where the branch pointed at this time (same as REV@{TIME})]:TIME:_default' \
'--data-dir=[Data directory\: embedded catalog, objects, cache, local state \[default\: \$XDG_DATA_HOME/quackfs\]]:DIR:_files' \
'--catalog=[Catalog\: sqlite\://PATH or postgres\://USER\:PASS@HOST\:PORT/DB \[default\: sqlite\://DATA_DIR/catalog.sqlite\]]:URL:_default' \
'--store=[Object store\: file\://PATH or s3\://BUCKET\[/PREFIX\] \[default\: file\://DATA_DIR/objects\]]:URL:_default' \
'-r+[Which database \[default\: the one mounted where the current directory is, else the one chosen with \`quackfs use\`\]]:NAME:_default' \
'--repo=[Which database \[default\: the one mounted where the current directory is, else the one chosen with \`quackfs use\`\]]:NAME:_default' \
'--force[Overwrite existing files]' \
'--json[Machine-readable JSON output]' \
'*-v[More logging on stderr (repeat for more); RUST_LOG overrides]' \
'*--verbose[More logging on stderr (repeat for more); RUST_LOG overrides]' \
'(-v --verbose)-q[Only errors on stderr]' \
'(-v --verbose)--quiet[Only errors on stderr]' \
'-h[Print help (see more with '\''--help'\'')]' \
'--help[Print help (see more with '\''--help'\'')]' \
'-V[Print version]' \
'--version[Print version]' \
':rev -- Revision to export, e.g. main, v1, analytics@main~2, main@{2024-05-01}:_default' \
':dir -- Directory to write into (created if missing):_files' \
&& ret=0
;;
(mount)
_arguments "${_arguments_options[@]}" : \
'--autocommit=[Make a \`checkpoint\` commit whenever DuckDB completes a checkpoint]:AUTOCOMMIT:(checkpoint off)' \
'--at=[Where the branch pointed at this time (same as REV@{TIME}; read-only)]:TIME:_default' \
'--cache-size=[Memory for extents read from the object store (checksummed, immutable), e.g. 512MiB \[default\: 256MiB\]]:SIZE:_default' \
'--disk-cache=[Local disk for extents read from a remote store (S3), shared by the mounts of this data directory and kept across remounts; 0 turns it off \[default\: 2GiB for S3, none for the local store\]]:SIZE:_default' \
'--dirty-limit=[Most written-but-unsynced bytes held in memory; past it writes wait for a flush (backpressure, e.g. while the object store is down) \[default\: 256MiB\]]:SIZE:_default' \
'--ready-file=[(internal) file to report readiness to, used by --daemon]:READY_FILE:_files' \
'--data-dir=[Data directory\: embedded catalog, objects, cache, local state \[default\: \$XDG_DATA_HOME/quackfs\]]:DIR:_files' \
'--catalog=[Catalog\: sqlite\://PATH or postgres\://USER\:PASS@HOST\:PORT/DB \[default\: sqlite\://DATA_DIR/catalog.sqlite\]]:URL:_default' \
'--store=[Object store\: file\://PATH or s3\://BUCKET\[/PREFIX\] \[default\: file\://DATA_DIR/objects\]]:URL:_default' \
'-r+[Which database \[default\: the one mounted where the current directory is, else the one chosen with \`quackfs use\`\]]:NAME:_default' \
'--repo=[Which database \[default\: the one mounted where the current directory is, else the one chosen with \`quackfs use\`\]]:NAME:_default' \
'--read-only[Serve a branch read-only]' \
'--daemon[Return once the mount is ready and keep serving in the background]' \
'--json[Machine-readable JSON output]' \
'*-v[More logging on stderr (repeat for more); RUST_LOG overrides]' \
'*--verbose[More logging on stderr (repeat for more); RUST_LOG overrides]' \
'(-v --verbose)-q[Only errors on stderr]' \
'(-v --verbose)--quiet[Only errors on stderr]' \
'-h[Print help (see more with '\''--help'\'')]' \
'--help[Print help (see more with '\''--help'\'')]' \
'-V[Print version]' \
'--version[Print version]' \
':rev -- What to serve\: \[DB@\]REV, e.g. analytics, analytics@exp, analytics@v1, main~3:_default' \
':dir -- Empty directory to mount on:_files' \
&& ret=0
;;
(umount)
_arguments "${_arguments_options[@]}" : \
'--data-dir=[Data directory\: embedded catalog, objects, cache, local state \[default\: \$XDG_DATA_HOME/quackfs\]]:DIR:_files' \
'--catalog=[Catalog\: sqlite\://PATH or postgres\://USER\:PASS@HOST\:PORT/DB \[default\: sqlite\://DATA_DIR/catalog.sqlite\]]:URL:_default' \
'--store=[Object store\: file\://PATH or s3\://BUCKET\[/PREFIX\] \[default\: file\://DATA_DIR/objects\]]:URL:_default' \
'-r+[Which database \[default\: the one mounted where the current directory is, else the one chosen with \`quackfs use\`\]]:NAME:_default' \
'--repo=[Which database \[default\: the one mounted where the current directory is, else the one chosen with \`quackfs use\`\]]:NAME:_default' \
'--json[Machine-readable JSON output]' \
'*-v[More logging on stderr (repeat for more); RUST_LOG overrides]' \
'*--verbose[More logging on stderr (repeat for more); RUST_LOG overrides]' \
'(-v --verbose)-q[Only errors on stderr]' \
'(-v --verbose)--quiet[Only errors on stderr]' \
'-h[Print help (see more with '\''--help'\'')]' \
'--help[Print help (see more with '\''--help'\'')]' \
'-V[Print version]' \
'--version[Print version]' \
':dir -- The mount point:_files' \
&& ret=0
;;
(commit)
_arguments "${_arguments_options[@]}" : \
'-m+[Commit message]:MESSAGE:_default' \
'--message=[Commit message]:MESSAGE:_default' \
'-b+[Branch to commit \[default\: the current branch\]]:BRANCH:_default' \
'--branch=[Branch to commit \[default\: the current branch\]]:BRANCH:_default' \
'--data-dir=[Data directory\: embedded catalog, objects, cache, local state \[default\: \$XDG_DATA_HOME/quackfs\]]:DIR:_files' \
'--catalog=[Catalog\: sqlite\://PATH or postgres\://USER\:PASS@HOST\:PORT/DB \[default\: sqlite\://DATA_DIR/catalog.sqlite\]]:URL:_default' \
'--store=[Object store\: file\://PATH or s3\://BUCKET\[/PREFIX\] \[default\: file\://DATA_DIR/objects\]]:URL:_default' \
'-r+[Which database \[default\: the one mounted where the current directory is, else the one chosen with \`quackfs use\`\]]:NAME:_default' \
'--repo=[Which database \[default\: the one mounted where the current directory is, else the one chosen with \`quackfs use\`\]]:NAME:_default' \
'--allow-empty[Record a commit even if nothing changed]' \
'--json[Machine-readable JSON output]' \
'*-v[More logging on stderr (repeat for more); RUST_LOG overrides]' \
'*--verbose[More logging on stderr (repeat for more); RUST_LOG overrides]' \
'(-v --verbose)-q[Only errors on stderr]' \
'(-v --verbose)--quiet[Only errors on stderr]' \
'-h[Print help (see more with '\''--help'\'')]' \
'--help[Print help (see more with '\''--help'\'')]' \
'-V[Print version]' \
'--version[Print version]' \
&& ret=0
;;
(log)
_arguments "${_arguments_options[@]}" : \
'-n+[Show at most N commits]:N:_default' \
'--max-count=[Show at most N commits]:N:_default' \
'--at=[Start where the branch pointed at this time (same as REV@{TIME})]:TIME:_default' \
'--data-dir=[Data directory\: embedded catalog, objects, cache, local state \[default\: \$XDG_DATA_HOME/quackfs\]]:DIR:_files' \
'--catalog=[Catalog\: sqlite\://PATH or postgres\://USER\:PASS@HOST\:PORT/DB \[default\: sqlite\://DATA_DIR/catalog.sqlite\]]:URL:_default' \
'--store=[Object store\: file\://PATH or s3\://BUCKET\[/PREFIX\] \[default\: file\://DATA_DIR/objects\]]:URL:_default' \
'-r+[Which database \[default\: the one mounted where the current directory is, else the one chosen with \`quackfs use\`\]]:NAME:_default' \
'--repo=[Which database \[default\: the one mounted where the current directory is, else the one chosen with \`quackfs use\`\]]:NAME:_default' \
'--json[Machine-readable JSON output]' \
'*-v[More logging on stderr (repeat for more); RUST_LOG overrides]' \
'*--verbose[More logging on stderr (repeat for more); RUST_LOG overrides]' \
'(-v --verbose)-q[Only errors on stderr]' \
'(-v --verbose)--quiet[Only errors on stderr]' \
'-h[Print help (see more with '\''--help'\'')]' \
'--help[Print help (see more with '\''--help'\'')]' \
'-V[Print version]' \
'--version[Print version]' \
'::rev -- Where to start \[default\: the current branch\]:_default' \
&& ret=0
;;
(show)
_arguments "${_arguments_options[@]}" : \
'--at=[Where the branch pointed at this time (same as REV@{TIME})]:TIME:_default' \
'--data-dir=[Data directory\: embedded catalog, objects, cache, local state \[default\: \$XDG_DATA_HOME/quackfs\]]:DIR:_files' \
'--catalog=[Catalog\: sqlite\://PATH or postgres\://USER\:PASS@HOST\:PORT/DB \[default\: sqlite\://DATA_DIR/catalog.sqlite\]]:URL:_default' \
'--store=[Object store\: file\://PATH or s3\://BUCKET\[/PREFIX\] \[default\: file\://DATA_DIR/objects\]]:URL:_default' \
'-r+[Which database \[default\: the one mounted where the current directory is, else the one chosen with \`quackfs use\`\]]:NAME:_default' \
'--repo=[Which database \[default\: the one mounted where the current directory is, else the one chosen with \`quackfs use\`\]]:NAME:_default' \
'--json[Machine-readable JSON output]' \
'*-v[More logging on stderr (repeat for more); RUST_LOG overrides]' \
'*--verbose[More logging on stderr (repeat for more); RUST_LOG overrides]' \
'(-v --verbose)-q[Only errors on stderr]' \
'(-v --verbose)--quiet[Only errors on stderr]' \
'-h[Print help]' \
'--help[Print help]' \
'-V[Print version]' \
'--version[Print version]' \
'::rev -- The commit to show \[default\: the current branch\]:_default' \
&& ret=0
;;
(status)
_arguments "${_arguments_options[@]}" : \
'--data-dir=[Data directory\: embedded catalog, objects, cache, local state \[default\: \$XDG_DATA_HOME/quackfs\]]:DIR:_files' \
'--catalog=[Catalog\: sqlite\://PATH or postgres\://USER\:PASS@HOST\:PORT/DB \[default\: sqlite\://DATA_DIR/catalog.sqlite\]]:URL:_default' \
'--store=[Object store\: file\://PATH or s3\://BUCKET\[/PREFIX\] \[default\: file\://DATA_DIR/objects\]]:URL:_default' \
'-r+[Which database \[default\: the one mounted where the current directory is, else the one chosen with \`quackfs use\`\]]:NAME:_default' \
'--repo=[Which database \[default\: the one mounted where the current directory is, else the one chosen with \`quackfs use\`\]]:NAME:_default' \
'--json[Machine-readable JSON output]' \
'*-v[More logging on stderr (repeat for more); RUST_LOG overrides]' \
'*--verbose[More logging on stderr (repeat for more); RUST_LOG overrides]' \
'(-v --verbose)-q[Only errors on stderr]' \
'(-v --verbose)--quiet[Only errors on stderr]' \
'-h[Print help (see more with '\''--help'\'')]' \
'--help[Print help (see more with '\''--help'\'')]' \
'-V[Print version]' \
'--version[Print version]' \
&& ret=0
;;
(branch)
_arguments "${_arguments_options[@]}" : \
'--at=[Start where REV pointed at this time (RFC 3339, YYYY-MM-DD, '\''N hours ago'\'')]:TIME:_default' \
'--data-dir=[Data directory\: embedded catalog, objects, cache, local state \[default\: \$XDG_DATA_HOME/quackfs\]]:DIR:_files' \
'--catalog=[Catalog\: sqlite\://PATH or postgres\://USER\:PASS@HOST\:PORT/DB \[default\: sqlite\://DATA_DIR/catalog.sqlite\]]:URL:_default' \
'--store=[Object store\: file\://PATH or s3\://BUCKET\[/PREFIX\] \[default\: file\://DATA_DIR/objects\]]:URL:_default' \
'-r+[Which database \[default\: the one mounted where the current directory is, else the one chosen with \`quackfs use\`\]]:NAME:_default' \
'--repo=[Which database \[default\: the one mounted where the current directory is, else the one chosen with \`quackfs use\`\]]:NAME:_default' \
'(--at)-d[Delete the branch]' \
'(--at)--delete[Delete the branch]' \
'--json[Machine-readable JSON output]' \
'*-v[More logging on stderr (repeat for more); RUST_LOG overrides]' \
'*--verbose[More logging on stderr (repeat for more); RUST_LOG overrides]' \
'(-v --verbose)-q[Only errors on stderr]' \
'(-v --verbose)--quiet[Only errors on stderr]' \
'-h[Print help (see more with '\''--help'\'')]' \
'--help[Print help (see more with '\''--help'\'')]' \
'-V[Print version]' \
'--version[Print version]' \
'::name -- Branch to create (or delete with -d):_default' \
'::rev -- Where the new branch starts \[default\: the current branch\]:_default' \
&& ret=0
;;
(tag)
_arguments "${_arguments_options[@]}" : \
'--at=[Tag where REV pointed at this time]:TIME:_default' \
'--data-dir=[Data directory\: embedded catalog, objects, cache, local state \[default\: \$XDG_DATA_HOME/quackfs\]]:DIR:_files' \
'--catalog=[Catalog\: sqlite\://PATH or postgres\://USER\:PASS@HOST\:PORT/DB \[default\: sqlite\://DATA_DIR/catalog.sqlite\]]:URL:_default' \
'--store=[Object store\: file\://PATH or s3\://BUCKET\[/PREFIX\] \[default\: file\://DATA_DIR/objects\]]:URL:_default' \
'-r+[Which database \[default\: the one mounted where the current directory is, else the one chosen with \`quackfs use\`\]]:NAME:_default' \
'--repo=[Which database \[default\: the one mounted where the current directory is, else the one chosen with \`quackfs use\`\]]:NAME:_default' \
'(--at)-d[Delete the tag]' \
'(--at)--delete[Delete the tag]' \
'--json[Machine-readable JSON output]' \
'*-v[More logging on stderr (repeat for more); RUST_LOG overrides]' \
'*--verbose[More logging on stderr (repeat for more); RUST_LOG overrides]' \
'(-v --verbose)-q[Only errors on stderr]' \
'(-v --verbose)--quiet[Only errors on stderr]' \
'-h[Print help (see more with '\''--help'\'')]' \
'--help[Print help (see more with '\''--help'\'')]' \
'-V[Print version]' \
'--version[Print version]' \
'::name -- Tag to create (or delete with -d):_default' \
'::rev -- The commit to tag \[default\: the current branch\]:_default' \
&& ret=0
;;
(reflog)
_arguments "${_arguments_options[@]}" : \
'--data-dir=[Data directory\: embedded catalog, objects, cache, local state \[default\: \$XDG_DATA_HOME/quackfs\]]:DIR:_files' \
'--catalog=[Catalog\: sqlite\://PATH or postgres\://USER\:PASS@HOST\:PORT/DB \[default\: sqlite\://DATA_DIR/catalog.sqlite\]]:URL:_default' \
'--store=[Object store\: file\://PATH or s3\://BUCKET\[/PREFIX\] \[default\: file\://DATA_DIR/objects\]]:URL:_default' \
'-r+[Which database \[default\: the one mounted where the current directory is, else the one chosen with \`quackfs use\`\]]:NAME:_default' \
'--repo=[Which database \[default\: the one mounted where the current directory is, else the one chosen with \`quackfs use\`\]]:NAME:_default' \
'--json[Machine-readable JSON output]' \
'*-v[More logging on stderr (repeat for more); RUST_LOG overrides]' \
'*--verbose[More logging on stderr (repeat for more); RUST_LOG overrides]' \
'(-v --verbose)-q[Only errors on stderr]' \
'(-v --verbose)--quiet[Only errors on stderr]' \
'-h[Print help]' \
'--help[Print help]' \
'-V[Print version]' \
'--version[Print version]' \
'::branch -- Branch \[default\: the current branch\]:_default' \
&& ret=0
;;
(reset)
_arguments "${_arguments_options[@]}" : \
'--at=[Move it to where REV pointed at this time]:TIME:_default' \
'--data-dir=[Data directory\: embedded catalog, objects, cache, local state \[default\: \$XDG_DATA_HOME/quackfs\]]:DIR:_files' \
'--catalog=[Catalog\: sqlite\://PATH or postgres\://USER\:PASS@HOST\:PORT/DB \[default\: sqlite\://DATA_DIR/catalog.sqlite\]]:URL:_default' \
'--store=[Object store\: file\://PATH or s3\://BUCKET\[/PREFIX\] \[default\: file\://DATA_DIR/objects\]]:URL:_default' \
'-r+[Which database \[default\: the one mounted where the current directory is, else the one chosen with \`quackfs use\`\]]:NAME:_default' \
'--repo=[Which database \[default\: the one mounted where the current directory is, else the one chosen with \`quackfs use\`\]]:NAME:_default' \
'--json[Machine-readable JSON output]' \
'*-v[More logging on stderr (repeat for more); RUST_LOG overrides]' \
'*--verbose[More logging on stderr (repeat for more); RUST_LOG overrides]' \
'(-v --verbose)-q[Only errors on stderr]' \
'(-v --verbose)--quiet[Only errors on stderr]' \
'-h[Print help (see more with '\''--help'\'')]' \
'--help[Print help (see more with '\''--help'\'')]' \
'-V[Print version]' \
'--version[Print version]' \
':branch -- The branch to move:_default' \
':rev -- Where it should point\: a revision of the same database:_default' \
&& ret=0
;;
(clone)
_arguments "${_arguments_options[@]}" : \
'--at=[Clone where REV pointed at this time (same as REV@{TIME})]:TIME:_default' \
'--data-dir=[Data directory\: embedded catalog, objects, cache, local state \[default\: \$XDG_DATA_HOME/quackfs\]]:DIR:_files' \
'--catalog=[Catalog\: sqlite\://PATH or postgres\://USER\:PASS@HOST\:PORT/DB \[default\: sqlite\://DATA_DIR/catalog.sqlite\]]:URL:_default' \
'--store=[Object store\: file\://PATH or s3\://BUCKET\[/PREFIX\] \[default\: file\://DATA_DIR/objects\]]:URL:_default' \
'-r+[Which database \[default\: the one mounted where the current directory is, else the one chosen with \`quackfs use\`\]]:NAME:_default' \
'--repo=[Which database \[default\: the one mounted where the current directory is, else the one chosen with \`quackfs use\`\]]:NAME:_default' \
'--json[Machine-readable JSON output]' \
'*-v[More logging on stderr (repeat for more); RUST_LOG overrides]' \
'*--verbose[More logging on stderr (repeat for more); RUST_LOG overrides]' \
'(-v --verbose)-q[Only errors on stderr]' \
'(-v --verbose)--quiet[Only errors on stderr]' \
'-h[Print help (see more with '\''--help'\'')]' \
'--help[Print help (see more with '\''--help'\'')]' \
'-V[Print version]' \
'--version[Print version]' \
':rev -- What to clone\: \[DB@\]REV, e.g. analytics@v1, analytics@main@{2024-05-01}:_default' \
':name -- Name of the new database:_default' \
&& ret=0
;;
(diff)
_arguments "${_arguments_options[@]}" : \
'*--rows=[Compare rows, table by table (all tables, or only those named\: NAME or SCHEMA.NAME)]::TABLE:_default' \
'--show=[With --rows\: up to N example rows per kind of change (shown with --json)]:N:_default' \
'--data-dir=[Data directory\: embedded catalog, objects, cache, local state \[default\: \$XDG_DATA_HOME/quackfs\]]:DIR:_files' \
'--catalog=[Catalog\: sqlite\://PATH or postgres\://USER\:PASS@HOST\:PORT/DB \[default\: sqlite\://DATA_DIR/catalog.sqlite\]]:URL:_default' \
'--store=[Object store\: file\://PATH or s3\://BUCKET\[/PREFIX\] \[default\: file\://DATA_DIR/objects\]]:URL:_default' \
'-r+[Which database \[default\: the one mounted where the current directory is, else the one chosen with \`quackfs use\`\]]:NAME:_default' \
'--repo=[Which database \[default\: the one mounted where the current directory is, else the one chosen with \`quackfs use\`\]]:NAME:_default' \
'--scan-all[With --rows\: scan every table, also those whose storage is unchanged]' \
'--json[Machine-readable JSON output]' \
'*-v[More logging on stderr (repeat for more); RUST_LOG overrides]' \
'*--verbose[More logging on stderr (repeat for more); RUST_LOG overrides]' \
'(-v --verbose)-q[Only errors on stderr]' \
'(-v --verbose)--quiet[Only errors on stderr]' \
'-h[Print help (see more with '\''--help'\'')]' \
'--help[Print help (see more with '\''--help'\'')]' \
'-V[Print version]' \
'--version[Print version]' \
':rev -- The old side:_default' \
'::rev2 -- The new side \[default\: the head of the current branch\]:_default' \
&& ret=0
;;
(apply)
_arguments "${_arguments_options[@]}" : \
'-b+[The branch to apply them to \[default\: the current branch\]]:BRANCH:_default' \
'--branch=[The branch to apply them to \[default\: the current branch\]]:BRANCH:_default' \
'-m+[Message of the merge commit \[default\: "apply SOURCE onto BRANCH"\]]:MSG:_default' \
'--message=[Message of the merge commit \[default\: "apply SOURCE onto BRANCH"\]]:MSG:_default' \
'--data-dir=[Data directory\: embedded catalog, objects, cache, local state \[default\: \$XDG_DATA_HOME/quackfs\]]:DIR:_files' \
'--catalog=[Catalog\: sqlite\://PATH or postgres\://USER\:PASS@HOST\:PORT/DB \[default\: sqlite\://DATA_DIR/catalog.sqlite\]]:URL:_default' \
'--store=[Object store\: file\://PATH or s3\://BUCKET\[/PREFIX\] \[default\: file\://DATA_DIR/objects\]]:URL:_default' \
'-r+[Which database \[default\: the one mounted where the current directory is, else the one chosen with \`quackfs use\`\]]:NAME:_default' \
'--repo=[Which database \[default\: the one mounted where the current directory is, else the one chosen with \`quackfs use\`\]]:NAME:_default' \
'--dry-run[Show what would change; commit nothing]' \
'(--theirs)--ours[Resolve every conflicting row by keeping the branch'\''s version]' \
'--theirs[Resolve every conflicting row by taking SOURCE'\''s version]' \
'--json[Machine-readable JSON output]' \
'*-v[More logging on stderr (repeat for more); RUST_LOG overrides]' \
'*--verbose[More logging on stderr (repeat for more); RUST_LOG overrides]' \
'(-v --verbose)-q[Only errors on stderr]' \
'(-v --verbose)--quiet[Only errors on stderr]' \
'-h[Print help (see more with '\''--help'\'')]' \
'--help[Print help (see more with '\''--help'\'')]' \
'-V[Print version]' \
'--version[Print version]' \
':source -- The revision whose changes to bring in (a branch, tag or commit of the same database):_default' \
&& ret=0
;;
(bisect)
_arguments "${_arguments_options[@]}" : \
'--sql=[The query\: one row, one boolean column (true = good), run with the database as the default catalog]:QUERY:_default' \
'--file=[The database file to query \[default\: the commit'\''s only .duckdb file\]]:NAME:_default' \
'--data-dir=[Data directory\: embedded catalog, objects, cache, local state \[default\: \$XDG_DATA_HOME/quackfs\]]:DIR:_files' \
'--catalog=[Catalog\: sqlite\://PATH or postgres\://USER\:PASS@HOST\:PORT/DB \[default\: sqlite\://DATA_DIR/catalog.sqlite\]]:URL:_default' \
'--store=[Object store\: file\://PATH or s3\://BUCKET\[/PREFIX\] \[default\: file\://DATA_DIR/objects\]]:URL:_default' \
'-r+[Which database \[default\: the one mounted where the current directory is, else the one chosen with \`quackfs use\`\]]:NAME:_default' \
'--repo=[Which database \[default\: the one mounted where the current directory is, else the one chosen with \`quackfs use\`\]]:NAME:_default' \
'--json[Machine-readable JSON output]' \
'*-v[More logging on stderr (repeat for more); RUST_LOG overrides]' \
'*--verbose[More logging on stderr (repeat for more); RUST_LOG overrides]' \
'(-v --verbose)-q[Only errors on stderr]' \
'(-v --verbose)--quiet[Only errors on stderr]' \
'-h[Print help (see more with '\''--help'\'')]' \
'--help[Print help (see more with '\''--help'\'')]' \
'-V[Print version]' \
'--version[Print version]' \
':good -- A revision where QUERY returns true:_default' \
':bad -- A later revision (GOOD is among its first parents) where QUERY returns false:_default' \
&& ret=0
;;
(verify)
_arguments "${_arguments_options[@]}" : \
'--data-dir=[Data directory\: embedded catalog, objects, cache, local state \[default\: \$XDG_DATA_HOME/quackfs\]]:DIR:_files' \
'--catalog=[Catalog\: sqlite\://PATH or postgres\://USER\:PASS@HOST\:PORT/DB \[default\: sqlite\://DATA_DIR/catalog.sqlite\]]:URL:_default' \
'--store=[Object store\: file\://PATH or s3\://BUCKET\[/PREFIX\] \[default\: file\://DATA_DIR/objects\]]:URL:_default' \
'-r+[Which database \[default\: the one mounted where the current directory is, else the one chosen with \`quackfs use\`\]]:NAME:_default' \
'--repo=[Which database \[default\: the one mounted where the current directory is, else the one chosen with \`quackfs use\`\]]:NAME:_default' \
'--all[Check every commit reachable from a branch or tag]' \
'--json[Machine-readable JSON output]' \
'*-v[More logging on stderr (repeat for more); RUST_LOG overrides]' \
'*--verbose[More logging on stderr (repeat for more); RUST_LOG overrides]' \
'(-v --verbose)-q[Only errors on stderr]' \
'(-v --verbose)--quiet[Only errors on stderr]' \
'-h[Print help (see more with '\''--help'\'')]' \
'--help[Print help (see more with '\''--help'\'')]' \
'-V[Print version]' \
'--version[Print version]' \
'::rev -- The revision to check \[default\: the current branch\]:_default' \
&& ret=0
;;
(drop)
_arguments "${_arguments_options[@]}" : \
'--data-dir=[Data directory\: embedded catalog, objects, cache, local state \[default\: \$XDG_DATA_HOME/quackfs\]]:DIR:_files' \
'--catalog=[Catalog\: sqlite\://PATH or postgres\://USER\:PASS@HOST\:PORT/DB \[default\: sqlite\://DATA_DIR/catalog.sqlite\]]:URL:_default' \
'--store=[Object store\: file\://PATH or s3\://BUCKET\[/PREFIX\] \[default\: file\://DATA_DIR/objects\]]:URL:_default' \
'-r+[Which database \[default\: the one mounted where the current directory is, else the one chosen with \`quackfs use\`\]]:NAME:_default' \
'--repo=[Which database \[default\: the one mounted where the current directory is, else the one chosen with \`quackfs use\`\]]:NAME:_default' \
'--yes[Confirm the deletion]' \
'--json[Machine-readable JSON output]' \
'*-v[More logging on stderr (repeat for more); RUST_LOG overrides]' \
'*--verbose[More logging on stderr (repeat for more); RUST_LOG overrides]' \
'(-v --verbose)-q[Only errors on stderr]' \
'(-v --verbose)--quiet[Only errors on stderr]' \
'-h[Print help (see more with '\''--help'\'')]' \
'--help[Print help (see more with '\''--help'\'')]' \
'-V[Print version]' \
'--version[Print version]' \
':name -- The database to delete:_default' \
&& ret=0
;;
(merge)
_arguments "${_arguments_options[@]}" : \
'--data-dir=[Data directory\: embedded catalog, objects, cache, local state \[default\: \$XDG_DATA_HOME/quackfs\]]:DIR:_files' \
'--catalog=[Catalog\: sqlite\://PATH or postgres\://USER\:PASS@HOST\:PORT/DB \[default\: sqlite\://DATA_DIR/catalog.sqlite\]]:URL:_default' \
'--store=[Object store\: file\://PATH or s3\://BUCKET\[/PREFIX\] \[default\: file\://DATA_DIR/objects\]]:URL:_default' \
'-r+[Which database \[default\: the one mounted where the current directory is, else the one chosen with \`quackfs use\`\]]:NAME:_default' \
'--repo=[Which database \[default\: the one mounted where the current directory is, else the one chosen with \`quackfs use\`\]]:NAME:_default' \
'--dry-run[Show what would be done without writing anything]' \
'--json[Machine-readable JSON output]' \
'*-v[More logging on stderr (repeat for more); RUST_LOG overrides]' \
'*--verbose[More logging on stderr (repeat for more); RUST_LOG overrides]' \
'(-v --verbose)-q[Only errors on stderr]' \
'(-v --verbose)--quiet[Only errors on stderr]' \
'-h[Print help (see more with '\''--help'\'')]' \
'--help[Print help (see more with '\''--help'\'')]' \
'-V[Print version]' \
'--version[Print version]' \
'::source -- (Not a merge of branches\: bringing a branch'\''s changes in is `quackfs apply SOURCE`.):_default' \
&& ret=0
;;
(gc)
_arguments "${_arguments_options[@]}" : \
'--retain=[Keep history this long, e.g. 7d, 12h, 0s]:DURATION:_default' \
'--grace=[Wait this long between marking a layer and deleting it, e.g. 1h, 0s]:DURATION:_default' \
'--data-dir=[Data directory\: embedded catalog, objects, cache, local state \[default\: \$XDG_DATA_HOME/quackfs\]]:DIR:_files' \
'--catalog=[Catalog\: sqlite\://PATH or postgres\://USER\:PASS@HOST\:PORT/DB \[default\: sqlite\://DATA_DIR/catalog.sqlite\]]:URL:_default' \
'--store=[Object store\: file\://PATH or s3\://BUCKET\[/PREFIX\] \[default\: file\://DATA_DIR/objects\]]:URL:_default' \
'-r+[Which database \[default\: the one mounted where the current directory is, else the one chosen with \`quackfs use\`\]]:NAME:_default' \
'--repo=[Which database \[default\: the one mounted where the current directory is, else the one chosen with \`quackfs use\`\]]:NAME:_default' \
'--dry-run[Show what would go, and how many bytes, without deleting anything]' \
'--json[Machine-readable JSON output]' \
'*-v[More logging on stderr (repeat for more); RUST_LOG overrides]' \
'*--verbose[More logging on stderr (repeat for more); RUST_LOG overrides]' \
'(-v --verbose)-q[Only errors on stderr]' \
'(-v --verbose)--quiet[Only errors on stderr]' \
'-h[Print help (see more with '\''--help'\'')]' \
'--help[Print help (see more with '\''--help'\'')]' \
'-V[Print version]' \
'--version[Print version]' \
&& ret=0
;;
(completions)
_arguments "${_arguments_options[@]}" : \
'--data-dir=[Data directory\: embedded catalog, objects, cache, local state \[default\: \$XDG_DATA_HOME/quackfs\]]:DIR:_files' \
'--catalog=[Catalog\: sqlite\://PATH or postgres\://USER\:PASS@HOST\:PORT/DB \[default\: sqlite\://DATA_DIR/catalog.sqlite\]]:URL:_default' \
'--store=[Object store\: file\://PATH or s3\://BUCKET\[/PREFIX\] \[default\: file\://DATA_DIR/objects\]]:URL:_default' \
'-r+[Which database \[default\: the one mounted where the current directory is, else the one chosen with \`quackfs use\`\]]:NAME:_default' \
'--repo=[Which database \[default\: the one mounted where the current directory is, else the one chosen with \`quackfs use\`\]]:NAME:_default' \
'--json[Machine-readable JSON output]' \
'*-v[More logging on stderr (repeat for more); RUST_LOG overrides]' \
'*--verbose[More logging on stderr (repeat for more); RUST_LOG overrides]' \
'(-v --verbose)-q[Only errors on stderr]' \
'(-v --verbose)--quiet[Only errors on stderr]' \
'-h[Print help (see more with '\''--help'\'')]' \
'--help[Print help (see more with '\''--help'\'')]' \
'-V[Print version]' \
'--version[Print version]' \
':shell -- The shell to generate completions for:(bash elvish fish powershell zsh)' \
&& ret=0
;;
(help)
_arguments "${_arguments_options[@]}" : \
":: :_quackfs__subcmd__help_commands" \
"*::: :->help" \
&& ret=0

    case $state in
    (help)
        words=($line[1] "${words[@]}")
        (( CURRENT += 1 ))
        curcontext="${curcontext%:*:*}:quackfs-help-command-$line[1]:"
        case $line[1] in
            (init)
_arguments "${_arguments_options[@]}" : \
&& ret=0
;;
(use)
_arguments "${_arguments_options[@]}" : \
&& ret=0
;;
(repos)
_arguments "${_arguments_options[@]}" : \
&& ret=0
;;
(import)
_arguments "${_arguments_options[@]}" : \
&& ret=0
;;
(export)
_arguments "${_arguments_options[@]}" : \
&& ret=0
;;
(mount)
_arguments "${_arguments_options[@]}" : \
&& ret=0
;;
(umount)
_arguments "${_arguments_options[@]}" : \
&& ret=0
;;
(commit)
_arguments "${_arguments_options[@]}" : \
&& ret=0
;;
(log)
_arguments "${_arguments_options[@]}" : \
&& ret=0
;;
(show)
_arguments "${_arguments_options[@]}" : \
&& ret=0
;;
(status)
_arguments "${_arguments_options[@]}" : \
&& ret=0
;;
(branch)
_arguments "${_arguments_options[@]}" : \
&& ret=0
;;
(tag)
_arguments "${_arguments_options[@]}" : \
&& ret=0
;;
(reflog)
_arguments "${_arguments_options[@]}" : \
&& ret=0
;;
(reset)
_arguments "${_arguments_options[@]}" : \
&& ret=0
;;
(clone)
_arguments "${_arguments_options[@]}" : \
&& ret=0
;;
(diff)
_arguments "${_arguments_options[@]}" : \
&& ret=0
;;
(apply)
_arguments "${_arguments_options[@]}" : \
&& ret=0
;;
(bisect)
_arguments "${_arguments_options[@]}" : \
&& ret=0
;;
(verify)
_arguments "${_arguments_options[@]}" : \
&& ret=0
;;
(drop)
_arguments "${_arguments_options[@]}" : \
&& ret=0
;;
(merge)
_arguments "${_arguments_options[@]}" : \
&& ret=0
;;
(gc)
_arguments "${_arguments_options[@]}" : \
&& ret=0
;;
(completions)
_arguments "${_arguments_options[@]}" : \
&& ret=0
;;
(help)
_arguments "${_arguments_options[@]}" : \
&& ret=0
;;
        esac
    ;;
esac
;;
        esac
    ;;
esac
}

(( $+functions[_quackfs_commands] )) ||
_quackfs_commands() {
    local commands; commands=(
'init:Create a new, empty database with branch \`main\`; it becomes the current database' \
'use:Set the current database (and branch) used when -r is not given' \
'repos:List databases\: name, branches, commits, logical size of \`main\`, stored bytes, creation time' \
'import:Commit local files onto a branch (each under its base name)' \
'export:Write every file of a revision into a directory, byte-identical to what a mount shows' \
'mount:Serve a revision through FUSE so that DuckDB (or anything) works on DIR/*.duckdb' \
'umount:Flush, release the branch and unmount a quackfs mount; waits until the mount process is done' \
'commit:Seal everything synced on the branch into a commit and print its id' \
'log:Show history, newest first\: id, time, author, kind, message, bytes added' \
'show:Show one commit\: parent, files and sizes, layers, bytes' \
'status:Show the current database and branch, its head, uncommitted bytes, mounts (writable and read-only), and where data lives' \
'branch:List, create or delete branches' \
'tag:List, create or delete tags (immutable names for commits)' \
'reflog:Show where a branch pointed, when, and why (newest first)' \
'reset:Move a branch to another revision (recorded in the reflog)' \
'clone:Create a new database whose \`main\` starts at REV, sharing all its layers (zero copy)' \
'diff:Show what changed between two revisions\: per file from the extent maps (no data read), and with --rows per table' \
'apply:Bring the changes SOURCE made since the merge base onto a branch' \
'bisect:Find the first commit between GOOD and BAD where a query turns false' \
'verify:Re-read every byte of a revision (or of every commit) and check it against its checksums' \
'drop:Delete a database\: its branches, tags and history names go' \
'merge:Compact the current database'\''s layers offline, beside live mounts' \
'gc:Delete layers and objects nothing needs any more (all databases of the catalog)' \
'completions:Print a shell completion script (bash, zsh, fish, elvish, powershell)' \
'help:Print this message or the help of the given subcommand(s)' \
    )
    _describe -t commands 'quackfs commands' commands "$@"
}
(( $+functions[_quackfs__subcmd__apply_commands] )) ||
_quackfs__subcmd__apply_commands() {
    local commands; commands=()
    _describe -t commands 'quackfs apply commands' commands "$@"
}
(( $+functions[_quackfs__subcmd__bisect_commands] )) ||
_quackfs__subcmd__bisect_commands() {
    local commands; commands=()
    _describe -t commands 'quackfs bisect commands' commands "$@"
}
(( $+functions[_quackfs__subcmd__branch_commands] )) ||
_quackfs__subcmd__branch_commands() {
    local commands; commands=()
    _describe -t commands 'quackfs branch commands' commands "$@"
}
(( $+functions[_quackfs__subcmd__clone_commands] )) ||
_quackfs__subcmd__clone_commands() {
    local commands; commands=()
    _describe -t commands 'quackfs clone commands' commands "$@"
}
(( $+functions[_quackfs__subcmd__commit_commands] )) ||
_quackfs__subcmd__commit_commands() {
    local commands; commands=()
    _describe -t commands 'quackfs commit commands' commands "$@"
}
(( $+functions[_quackfs__subcmd__completions_commands] )) ||
_quackfs__subcmd__completions_commands() {
    local commands; commands=()
    _describe -t commands 'quackfs completions commands' commands "$@"
}
(( $+functions[_quackfs__subcmd__diff_commands] )) ||
_quackfs__subcmd__diff_commands() {
    local commands; commands=()
    _describe -t commands 'quackfs diff commands' commands "$@"
}
(( $+functions[_quackfs__subcmd__drop_commands] )) ||
_quackfs__subcmd__drop_commands() {
    local commands; commands=()
    _describe -t commands 'quackfs drop commands' commands "$@"
}
(( $+functions[_quackfs__subcmd__export_commands] )) ||
_quackfs__subcmd__export_commands() {
    local commands; commands=()
    _describe -t commands 'quackfs export commands' commands "$@"
}
(( $+functions[_quackfs__subcmd__gc_commands] )) ||
_quackfs__subcmd__gc_commands() {
    local commands; commands=()
    _describe -t commands 'quackfs gc commands' commands "$@"
}
(( $+functions[_quackfs__subcmd__help_commands] )) ||
_quackfs__subcmd__help_commands() {
    local commands; commands=(
'init:Create a new, empty database with branch \`main\`; it becomes the current database' \
'use:Set the current database (and branch) used when -r is not given' \
'repos:List databases\: name, branches, commits, logical size of \`main\`, stored bytes, creation time' \
'import:Commit local files onto a branch (each under its base name)' \
'export:Write every file of a revision into a directory, byte-identical to what a mount shows' \
'mount:Serve a revision through FUSE so that DuckDB (or anything) works on DIR/*.duckdb' \
'umount:Flush, release the branch and unmount a quackfs mount; waits until the mount process is done' \
'commit:Seal everything synced on the branch into a commit and print its id' \
'log:Show history, newest first\: id, time, author, kind, message, bytes added' \
'show:Show one commit\: parent, files and sizes, layers, bytes' \
'status:Show the current database and branch, its head, uncommitted bytes, mounts (writable and read-only), and where data lives' \
'branch:List, create or delete branches' \
'tag:List, create or delete tags (immutable names for commits)' \
'reflog:Show where a branch pointed, when, and why (newest first)' \
'reset:Move a branch to another revision (recorded in the reflog)' \
'clone:Create a new database whose \`main\` starts at REV, sharing all its layers (zero copy)' \
'diff:Show what changed between two revisions\: per file from the extent maps (no data read), and with --rows per table' \
'apply:Bring the changes SOURCE made since the merge base onto a branch' \
'bisect:Find the first commit between GOOD and BAD where a query turns false' \
'verify:Re-read every byte of a revision (or of every commit) and check it against its checksums' \
'drop:Delete a database\: its branches, tags and history names go' \
'merge:Compact the current database'\''s layers offline, beside live mounts' \
'gc:Delete layers and objects nothing needs any more (all databases of the catalog)' \
'completions:Print a shell completion script (bash, zsh, fish, elvish, powershell)' \
'help:Print this message or the help of the given subcommand(s)' \
    )
    _describe -t commands 'quackfs help commands' commands "$@"
}
(( $+functions[_quackfs__subcmd__help__subcmd__apply_commands] )) ||
_quackfs__subcmd__help__subcmd__apply_commands() {
    local commands; commands=()
    _describe -t commands 'quackfs help apply commands' commands "$@"
}
(( $+functions[_quackfs__subcmd__help__subcmd__bisect_commands] )) ||
_quackfs__subcmd__help__subcmd__bisect_commands() {
    local commands; commands=()
    _describe -t commands 'quackfs help bisect commands' commands "$@"
}
(( $+functions[_quackfs__subcmd__help__subcmd__branch_commands] )) ||
_quackfs__subcmd__help__subcmd__branch_commands() {
    local commands; commands=()
    _describe -t commands 'quackfs help branch commands' commands "$@"
}
(( $+functions[_quackfs__subcmd__help__subcmd__clone_commands] )) ||
_quackfs__subcmd__help__subcmd__clone_commands() {
    local commands; commands=()
    _describe -t commands 'quackfs help clone commands' commands "$@"
}
(( $+functions[_quackfs__subcmd__help__subcmd__commit_commands] )) ||
_quackfs__subcmd__help__subcmd__commit_commands() {
    local commands; commands=()
    _describe -t commands 'quackfs help commit commands' commands "$@"
}
(( $+functions[_quackfs__subcmd__help__subcmd__completions_commands] )) ||
_quackfs__subcmd__help__subcmd__completions_commands() {
    local commands; commands=()
    _describe -t commands 'quackfs help completions commands' commands "$@"
}
(( $+functions[_quackfs__subcmd__help__subcmd__diff_commands] )) ||
_quackfs__subcmd__help__subcmd__diff_commands() {
    local commands; commands=()
    _describe -t commands 'quackfs help diff commands' commands "$@"
}
(( $+functions[_quackfs__subcmd__help__subcmd__drop_commands] )) ||
_quackfs__subcmd__help__subcmd__drop_commands() {
    local commands; commands=()
    _describe -t commands 'quackfs help drop commands' commands "$@"
}
(( $+functions[_quackfs__subcmd__help__subcmd__export_commands] )) ||
_quackfs__subcmd__help__subcmd__export_commands() {
    local commands; commands=()
    _describe -t commands 'quackfs help export commands' commands "$@"
}
(( $+functions[_quackfs__subcmd__help__subcmd__gc_commands] )) ||
_quackfs__subcmd__help__subcmd__gc_commands() {
    local commands; commands=()
    _describe -t commands 'quackfs help gc commands' commands "$@"
}
(( $+functions[_quackfs__subcmd__help__subcmd__help_commands] )) ||
_quackfs__subcmd__help__subcmd__help_commands() {
    local commands; commands=()
    _describe -t commands 'quackfs help help commands' commands "$@"
}
(( $+functions[_quackfs__subcmd__help__subcmd__import_commands] )) ||
_quackfs__subcmd__help__subcmd__import_commands() {
    local commands; commands=()
    _describe -t commands 'quackfs help import commands' commands "$@"
}
(( $+functions[_quackfs__subcmd__help__subcmd__init_commands] )) ||
_quackfs__subcmd__help__subcmd__init_commands() {
    local commands; commands=()
    _describe -t commands 'quackfs help init commands' commands "$@"
}
(( $+functions[_quackfs__subcmd__help__subcmd__log_commands] )) ||
_quackfs__subcmd__help__subcmd__log_commands() {
    local commands; commands=()
    _describe -t commands 'quackfs help log commands' commands "$@"
}
(( $+functions[_quackfs__subcmd__help__subcmd__merge_commands] )) ||
_quackfs__subcmd__help__subcmd__merge_commands() {
    local commands; commands=()
    _describe -t commands 'quackfs help merge commands' commands "$@"
}
(( $+functions[_quackfs__subcmd__help__subcmd__mount_commands] )) ||
_quackfs__subcmd__help__subcmd__mount_commands() {
    local commands; commands=()
    _describe -t commands 'quackfs help mount commands' commands "$@"
}
(( $+functions[_quackfs__subcmd__help__subcmd__reflog_commands] )) ||
_quackfs__subcmd__help__subcmd__reflog_commands() {
    local commands; commands=()
    _describe -t commands 'quackfs help reflog commands' commands "$@"
}
(( $+functions[_quackfs__subcmd__help__subcmd__repos_commands] )) ||
_quackfs__subcmd__help__subcmd__repos_commands() {
    local commands; commands=()
    _describe -t commands 'quackfs help repos commands' commands "$@"
}
(( $+functions[_quackfs__subcmd__help__subcmd__reset_commands] )) ||
_quackfs__subcmd__help__subcmd__reset_commands() {
    local commands; commands=()
    _describe -t commands 'quackfs help reset commands' commands "$@"
}
(( $+functions[_quackfs__subcmd__help__subcmd__show_commands] )) ||
_quackfs__subcmd__help__subcmd__show_commands() {
    local commands; commands=()
    _describe -t commands 'quackfs help show commands' commands "$@"
}
(( $+functions[_quackfs__subcmd__help__subcmd__status_commands] )) ||
_quackfs__subcmd__help__subcmd__status_commands() {
    local commands; commands=()
    _describe -t commands 'quackfs help status commands' commands "$@"
}
(( $+functions[_quackfs__subcmd__help__subcmd__tag_commands] )) ||
_quackfs__subcmd__help__subcmd__tag_commands() {
    local commands; commands=()
    _describe -t commands 'quackfs help tag commands' commands "$@"
}
(( $+functions[_quackfs__subcmd__help__subcmd__umount_commands] )) ||
_quackfs__subcmd__help__subcmd__umount_commands() {
    local commands; commands=()
    _describe -t commands 'quackfs help umount commands' commands "$@"
}
(( $+functions[_quackfs__subcmd__help__subcmd__use_commands] )) ||
_quackfs__subcmd__help__subcmd__use_commands() {
    local commands; commands=()
    _describe -t commands 'quackfs help use commands' commands "$@"
}
(( $+functions[_quackfs__subcmd__help__subcmd__verify_commands] )) ||
_quackfs__subcmd__help__subcmd__verify_commands() {
    local commands; commands=()
    _describe -t commands 'quackfs help verify commands' commands "$@"
}
(( $+functions[_quackfs__subcmd__import_commands] )) ||
_quackfs__subcmd__import_commands() {
    local commands; commands=()
    _describe -t commands 'quackfs import commands' commands "$@"
}
(( $+functions[_quackfs__subcmd__init_commands] )) ||
_quackfs__subcmd__init_commands() {
    local commands; commands=()
    _describe -t commands 'quackfs init commands' commands "$@"
}
(( $+functions[_quackfs__subcmd__log_commands] )) ||
_quackfs__subcmd__log_commands() {
    local commands; commands=()
    _describe -t commands 'quackfs log commands' commands "$@"
}
(( $+functions[_quackfs__subcmd__merge_commands] )) ||
_quackfs__subcmd__merge_commands() {
    local commands; commands=()
    _describe -t commands 'quackfs merge commands' commands "$@"
}
(( $+functions[_quackfs__subcmd__mount_commands] )) ||
_quackfs__subcmd__mount_commands() {
    local commands; commands=()
    _describe -t commands 'quackfs mount commands' commands "$@"
}
(( $+functions[_quackfs__subcmd__reflog_commands] )) ||
_quackfs__subcmd__reflog_commands() {
    local commands; commands=()
    _describe -t commands 'quackfs reflog commands' commands "$@"
}
(( $+functions[_quackfs__subcmd__repos_commands] )) ||
_quackfs__subcmd__repos_commands() {
    local commands; commands=()
    _describe -t commands 'quackfs repos commands' commands "$@"
}
(( $+functions[_quackfs__subcmd__reset_commands] )) ||
_quackfs__subcmd__reset_commands() {
    local commands; commands=()
    _describe -t commands 'quackfs reset commands' commands "$@"
}
(( $+functions[_quackfs__subcmd__show_commands] )) ||
_quackfs__subcmd__show_commands() {
    local commands; commands=()
    _describe -t commands 'quackfs show commands' commands "$@"
}
(( $+functions[_quackfs__subcmd__status_commands] )) ||
_quackfs__subcmd__status_commands() {
    local commands; commands=()
    _describe -t commands 'quackfs status commands' commands "$@"
}
(( $+functions[_quackfs__subcmd__tag_commands] )) ||
_quackfs__subcmd__tag_commands() {
    local commands; commands=()
    _describe -t commands 'quackfs tag commands' commands "$@"
}
(( $+functions[_quackfs__subcmd__umount_commands] )) ||
_quackfs__subcmd__umount_commands() {
    local commands; commands=()
    _describe -t commands 'quackfs umount commands' commands "$@"
}
(( $+functions[_quackfs__subcmd__use_commands] )) ||
_quackfs__subcmd__use_commands() {
    local commands; commands=()
    _describe -t commands 'quackfs use commands' commands "$@"
}
(( $+functions[_quackfs__subcmd__verify_commands] )) ||
_quackfs__subcmd__verify_commands() {
    local commands; commands=()
    _describe -t commands 'quackfs verify commands' commands "$@"
}

if [ "$funcstack[1]" = "_quackfs" ]; then
    _quackfs "$@"
else
    compdef _quackfs quackfs
fi
