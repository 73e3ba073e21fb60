# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_quackfs_global_optspecs
    string join \n data-dir= catalog= store= r/repo= json v/verbose q/quiet h/help V/version
end

function __fish_quackfs_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_quackfs_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_quackfs_using_subcommand
    set -l cmd (__fish_quackfs_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c quackfs -n "__fish_quackfs_needs_command" -l data-dir -d 'Data directory: embedded catalog, objects, cache, local state [default: $XDG_DATA_HOME/quackfs]' -r -F
complete -c quackfs -n "__fish_quackfs_needs_command" -l catalog -d 'Catalog: sqlite://PATH or postgres://USER:PASS@HOST:PORT/DB [default: sqlite://DATA_DIR/catalog.sqlite]' -r
complete -c quackfs -n "__fish_quackfs_needs_command" -l store -d 'Object store: file://PATH or s3://BUCKET[/PREFIX] [default: file://DATA_DIR/objects]' -r
complete -c quackfs -n "__fish_quackfs_needs_command" -s r -l repo -d 'Which database [default: the one mounted where the current directory is, else the one chosen with `quackfs use`]' -r
complete -c quackfs -n "__fish_quackfs_needs_command" -l json -d 'Machine-readable JSON output'
complete -c quackfs -n "__fish_quackfs_needs_command" -s v -l verbose -d 'More logging on stderr (repeat for more); RUST_LOG overrides'
complete -c quackfs -n "__fish_quackfs_needs_command" -s q -l quiet -d 'Only errors on stderr'
complete -c quackfs -n "__fish_quackfs_needs_command" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c quackfs -n "__fish_quackfs_needs_command" -s V -l version -d 'Print version'
complete -c quackfs -n "__fish_quackfs_needs_command" -f -a "init" -d 'Create a new, empty database with branch `main`; it becomes the current database'
complete -c quackfs -n "__fish_quackfs_needs_command" -f -a "use" -d 'Set the current database (and branch) used when -r is not given'
complete -c quackfs -n "__fish_quackfs_needs_command" -f -a "repos" -d 'List databases: name, branches, commits, logical size of `main`, stored bytes, creation time'
complete -c quackfs -n "__fish_quackfs_needs_command" -f -a "import" -d 'Commit local files onto a branch (each under its base name)'
complete -c quackfs -n "__fish_quackfs_needs_command" -f -a "export" -d 'Write every file of a revision into a directory, byte-identical to what a mount shows'
complete -c quackfs -n "__fish_quackfs_needs_command" -f -a "mount" -d 'Serve a revision through FUSE so that DuckDB (or anything) works on DIR/*.duckdb'
complete -c quackfs -n "__fish_quackfs_needs_command" -f -a "umount" -d 'Flush, release the branch and unmount a quackfs mount; waits until the mount process is done'
complete -c quackfs -n "__fish_quackfs_needs_command" -f -a "commit" -d 'Seal everything synced on the branch into a commit and print its id'
complete -c quackfs -n "__fish_quackfs_needs_command" -f -a "log" -d 'Show history, newest first: id, time, author, kind, message, bytes added'
complete -c quackfs -n "__fish_quackfs_needs_command" -f -a "show" -d 'Show one commit: parent, files and sizes, layers, bytes'
complete -c quackfs -n "__fish_quackfs_needs_command" -f -a "status" -d 'Show the current database and branch, its head, uncommitted bytes, mounts (writable and read-only), and where data lives'
complete -c quackfs -n "__fish_quackfs_needs_command" -f -a "branch" -d 'List, create or delete branches'
complete -c quackfs -n "__fish_quackfs_needs_command" -f -a "tag" -d 'List, create or delete tags (immutable names for commits)'
complete -c quackfs -n "__fish_quackfs_needs_command" -f -a "reflog" -d 'Show where a branch pointed, when, and why (newest first)'
complete -c quackfs -n "__fish_quackfs_needs_command" -f -a "reset" -d 'Move a branch to another revision (recorded in the reflog)'
complete -c quackfs -n "__fish_quackfs_needs_command" -f -a "clone" -d 'Create a new database whose `main` starts at REV, sharing all its layers (zero copy)'
complete -c quackfs -n "__fish_quackfs_needs_command" -f -a "diff" -d 'Show what changed between two revisions: per file from the extent maps (no data read), and with --rows per table'
complete -c quackfs -n "__fish_quackfs_needs_command" -f -a "apply" -d 'Bring the changes SOURCE made since the merge base onto a branch'
complete -c quackfs -n "__fish_quackfs_needs_command" -f -a "bisect" -d 'Find the first commit between GOOD and BAD where a query turns false'
complete -c quackfs -n "__fish_quackfs_needs_command" -f -a "verify" -d 'Re-read every byte of a revision (or of every commit) and check it against its checksums'
complete -c quackfs -n "__fish_quackfs_needs_command" -f -a "drop" -d 'Delete a database: its branches, tags and history names go'
complete -c quackfs -n "__fish_quackfs_needs_command" -f -a "merge" -d 'Compact the current database\'s layers offline, beside live mounts'
complete -c quackfs -n "__fish_quackfs_needs_command" -f -a "gc" -d 'Delete layers and objects nothing needs any more (all databases of the catalog)'
complete -c quackfs -n "__fish_quackfs_needs_command" -f -a "completions" -d 'Print a shell completion script (bash, zsh, fish, elvish, powershell)'
complete -c quackfs -n "__fish_quackfs_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c quackfs -n "__fish_quackfs_using_subcommand init" -l import -d 'Files to import as the first commit (stored under their base names)' -r -F
complete -c quackfs -n "__fish_quackfs_using_subcommand init" -s m -l message -d 'Message of the import commit' -r
complete -c quackfs -n "__fish_quackfs_using_subcommand init" -l data-dir -d 'Data directory: embedded catalog, objects, cache, local state [default: $XDG_DATA_HOME/quackfs]' -r -F
complete -c quackfs -n "__fish_quackfs_using_subcommand init" -l catalog -d 'Catalog: sqlite://PATH or postgres://USER:PASS@HOST:PORT/DB [default: sqlite://DATA_DIR/catalog.sqlite]' -r
complete -c quackfs -n "__fish_quackfs_using_subcommand init" -l store -d 'Object store: file://PATH or s3://BUCKET[/PREFIX] [default: file://DATA_DIR/objects]' -r
complete -c quackfs -n "__fish_quackfs_using_subcommand init" -s r -l repo -d 'Which database [default: the one mounted where the current directory is, else the one chosen with `quackfs use`]' -r
complete -c quackfs -n "__fish_quackfs_using_subcommand init" -l json -d 'Machine-readable JSON output'
complete -c quackfs -n "__fish_quackfs_using_subcommand init" -s v -l verbose -d 'More logging on stderr (repeat for more); RUST_LOG overrides'
complete -c quackfs -n "__fish_quackfs_using_subcommand init" -s q -l quiet -d 'Only errors on stderr'
complete -c quackfs -n "__fish_quackfs_using_subcommand init" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c quackfs -n "__fish_quackfs_using_subcommand init" -s V -l version -d 'Print version'
complete -c quackfs -n "__fish_quackfs_using_subcommand use" -l data-dir -d 'Data directory: embedded catalog, objects, cache, local state [default: $XDG_DATA_HOME/quackfs]' -r -F
complete -c quackfs -n "__fish_quackfs_using_subcommand use" -l catalog -d 'Catalog: sqlite://PATH or postgres://USER:PASS@HOST:PORT/DB [default: sqlite://DATA_DIR/catalog.sqlite]' -r
complete -c quackfs -n "__fish_quackfs_using_subcommand use" -l store -d 'Object store: file://PATH or s3://BUCKET[/PREFIX] [default: file://DATA_DIR/objects]' -r
complete -c quackfs -n "__fish_quackfs_using_subcommand use" -s r -l repo -d 'Which database [default: the one mounted where the current directory is, else the one chosen with `quackfs use`]' -r
complete -c quackfs -n "__fish_quackfs_using_subcommand use" -l json -d 'Machine-readable JSON output'
complete -c quackfs -n "__fish_quackfs_using_subcommand use" -s v -l verbose -d 'More logging on stderr (repeat for more); RUST_LOG overrides'
complete -c quackfs -n "__fish_quackfs_using_subcommand use" -s q -l quiet -d 'Only errors on stderr'
complete -c quackfs -n "__fish_quackfs_using_subcommand use" -s h -l help -d 'Print help'
complete -c quackfs -n "__fish_quackfs_using_subcommand use" -s V -l version -d 'Print version'
complete -c quackfs -n "__fish_quackfs_using_subcommand repos" -l data-dir -d 'Data directory: embedded catalog, objects, cache, local state [default: $XDG_DATA_HOME/quackfs]' -r -F
complete -c quackfs -n "__fish_quackfs_using_subcommand repos" -l catalog -d 'Catalog: sqlite://PATH or postgres://USER:PASS@HOST:PORT/DB [default: sqlite://DATA_DIR/catalog.sqlite]' -r
complete -c quackfs -n "__fish_quackfs_using_subcommand repos" -l store -d 'Object store: file://PATH or s3://BUCKET[/PREFIX] [default: file://DATA_DIR/objects]' -r
complete -c quackfs -n "__fish_quackfs_using_subcommand repos" -s r -l repo -d 'Which database [default: the one mounted where the current directory is, else the one chosen with `quackfs use`]' -r
complete -c quackfs -n "__fish_quackfs_using_subcommand repos" -l json -d 'Machine-readable JSON output'
complete -c quackfs -n "__fish_quackfs_using_subcommand repos" -s v -l verbose -d 'More logging on stderr (repeat for more); RUST_LOG overrides'
complete -c quackfs -n "__fish_quackfs_using_subcommand repos" -s q -l quiet -d 'Only errors on stderr'
complete -c quackfs -n "__fish_quackfs_using_subcommand repos" -s h -l help -d 'Print help'
complete -c quackfs -n "__fish_quackfs_using_subcommand repos" -s V -l version -d 'Print version'
complete -c quackfs -n "__fish_quackfs_using_subcommand import" -s b -l branch -d 'Branch to commit onto [default: the current branch]' -r
complete -c quackfs -n "__fish_quackfs_using_subcommand import" -s m -l message -d 'Commit message [default: "import FILE…"]' -r
complete -c quackfs -n "__fish_quackfs_using_subcommand import" -l data-dir -d 'Data directory: embedded catalog, objects, cache, local state [default: $XDG_DATA_HOME/quackfs]' -r -F
complete -c quackfs -n "__fish_quackfs_using_subcommand import" -l catalog -d 'Catalog: sqlite://PATH or postgres://USER:PASS@HOST:PORT/DB [default: sqlite://DATA_DIR/catalog.sqlite]' -r
complete -c quackfs -n "__fish_quackfs_using_subcommand import" -l store -d 'Object store: file://PATH or s3://BUCKET[/PREFIX] [default: file://DATA_DIR/objects]' -r
complete -c quackfs -n "__fish_quackfs_using_subcommand import" -s r -l repo -d 'Which database [default: the one mounted where the current directory is, else the one chosen with `quackfs use`]' -r
complete -c quackfs -n "__fish_quackfs_using_subcommand import" -l json -d 'Machine-readable JSON output'
complete -c quackfs -n "__fish_quackfs_using_subcommand import" -s v -l verbose -d 'More logging on stderr (repeat for more); RUST_LOG overrides'
complete -c quackfs -n "__fish_quackfs_using_subcommand import" -s q -l quiet -d 'Only errors on stderr'
complete -c quackfs -n "__fish_quackfs_using_subcommand import" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c quackfs -n "__fish_quackfs_using_subcommand import" -s V -l version -d 'Print version'
complete -c quackfs -n "__fish_quackfs_using_subcommand export" -l at -d 'Where the branch pointed at this time (same as REV@{TIME})' -r
complete -c quackfs -n "__fish_quackfs_using_subcommand export" -l data-dir -d 'Data directory: embedded catalog, objects, cache, local state [default: $XDG_DATA_HOME/quackfs]' -r -F
complete -c quackfs -n "__fish_quackfs_using_subcommand export" -l catalog -d 'Catalog: sqlite://PATH or postgres://USER:PASS@HOST:PORT/DB [default: sqlite://DATA_DIR/catalog.sqlite]' -r
complete -c quackfs -n "__fish_quackfs_using_subcommand export" -l store -d 'Object store: file://PATH or s3://BUCKET[/PREFIX] [default: file://DATA_DIR/objects]' -r
complete -c quackfs -n "__fish_quackfs_using_subcommand export" -s r -l repo -d 'Which database [default: the one mounted where the current directory is, else the one chosen with `quackfs use`]' -r
complete -c quackfs -n "__fish_quackfs_using_subcommand export" -l force -d 'Overwrite existing files'
complete -c quackfs -n "__fish_quackfs_using_subcommand export" -l json -d 'Machine-readable JSON output'
complete -c quackfs -n "__fish_quackfs_using_subcommand export" -s v -l verbose -d 'More logging on stderr (repeat for more); RUST_LOG overrides'
complete -c quackfs -n "__fish_quackfs_using_subcommand export" -s q -l quiet -d 'Only errors on stderr'
complete -c quackfs -n "__fish_quackfs_using_subcommand export" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c quackfs -n "__fish_quackfs_using_subcommand export" -s V -l version -d 'Print version'
complete -c quackfs -n "__fish_quackfs_using_subcommand mount" -l autocommit -d 'Make a `checkpoint` commit whenever DuckDB completes a checkpoint' -r -f -a "checkpoint\t''
off\t''"
complete -c quackfs -n "__fish_quackfs_using_subcommand mount" -l at -d 'Where the branch pointed at this time (same as REV@{TIME}; read-only)' -r
complete -c quackfs -n "__fish_quackfs_using_subcommand mount" -l cache-size -d 'Memory for extents read from the object store (checksummed, immutable), e.g. 512MiB [default: 256MiB]' -r
complete -c quackfs -n "__fish_quackfs_using_subcommand mount" -l disk-cache -d 'Local disk for extents read from a remote store (S3), shared by the mounts of this data directory and kept across remounts; 0 turns it off [default: 2GiB for S3, none for the local store]' -r
complete -c quackfs -n "__fish_quackfs_using_subcommand mount" -l dirty-limit -d 'Most written-but-unsynced bytes held in memory; past it writes wait for a flush (backpressure, e.g. while the object store is down) [default: 256MiB]' -r
complete -c quackfs -n "__fish_quackfs_using_subcommand mount" -l ready-file -d '(internal) file to report readiness to, used by --daemon' -r -F
complete -c quackfs -n "__fish_quackfs_using_subcommand mount" -l data-dir -d 'Data directory: embedded catalog, objects, cache, local state [default: $XDG_DATA_HOME/quackfs]' -r -F
complete -c quackfs -n "__fish_quackfs_using_subcommand mount" -l catalog -d 'Catalog: sqlite://PATH or postgres://USER:PASS@HOST:PORT/DB [default: sqlite://DATA_DIR/catalog.sqlite]' -r
complete -c quackfs -n "__fish_quackfs_using_subcommand mount" -l store -d 'Object store: file://PATH or s3://BUCKET[/PREFIX] [default: file://DATA_DIR/objects]' -r
complete -c quackfs -n "__fish_quackfs_using_subcommand mount" -s r -l repo -d 'Which database [default: the one mounted where the current directory is, else the one chosen with `quackfs use`]' -r
complete -c quackfs -n "__fish_quackfs_using_subcommand mount" -l read-only -d 'Serve a branch read-only'
complete -c quackfs -n "__fish_quackfs_using_subcommand mount" -l daemon -d 'Return once the mount is ready and keep serving in the background'
complete -c quackfs -n "__fish_quackfs_using_subcommand mount" -l json -d 'Machine-readable JSON output'
complete -c quackfs -n "__fish_quackfs_using_subcommand mount" -s v -l verbose -d 'More logging on stderr (repeat for more); RUST_LOG overrides'
complete -c quackfs -n "__fish_quackfs_using_subcommand mount" -s q -l quiet -d 'Only errors on stderr'
complete -c quackfs -n "__fish_quackfs_using_subcommand mount" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c quackfs -n "__fish_quackfs_using_subcommand mount" -s V -l version -d 'Print version'
complete -c quackfs -n "__fish_quackfs_using_subcommand umount" -l data-dir -d 'Data directory: embedded catalog, objects, cache, local state [default: $XDG_DATA_HOME/quackfs]' -r -F
complete -c quackfs -n "__fish_quackfs_using_subcommand umount" -l catalog -d 'Catalog: sqlite://PATH or postgres://USER:PASS@HOST:PORT/DB [default: sqlite://DATA_DIR/catalog.sqlite]' -r
complete -c quackfs -n "__fish_quackfs_using_subcommand umount" -l store -d 'Object store: file://PATH or s3://BUCKET[/PREFIX] [default: file://DATA_DIR/objects]' -r
complete -c quackfs -n "__fish_quackfs_using_subcommand umount" -s r -l repo -d 'Which database [default: the one mounted where the current directory is, else the one chosen with `quackfs use`]' -r
complete -c quackfs -n "__fish_quackfs_using_subcommand umount" -l json -d 'Machine-readable JSON output'
complete -c quackfs -n "__fish_quackfs_using_subcommand umount" -s v -l verbose -d 'More logging on stderr (repeat for more); RUST_LOG overrides'
complete -c quackfs -n "__fish_quackfs_using_subcommand umount" -s q -l quiet -d 'Only errors on stderr'
complete -c quackfs -n "__fish_quackfs_using_subcommand umount" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c quackfs -n "__fish_quackfs_using_subcommand umount" -s V -l version -d 'Print version'
complete -c quackfs -n "__fish_quackfs_using_subcommand commit" -s m -l message -d 'Commit message' -r
complete -c quackfs -n "__fish_quackfs_using_subcommand commit" -s b -l branch -d 'Branch to commit [default: the current branch]' -r
complete -c quackfs -n "__fish_quackfs_using_subcommand commit" -l data-dir -d 'Data directory: embedded catalog, objects, cache, local state [default: $XDG_DATA_HOME/quackfs]' -r -F
complete -c quackfs -n "__fish_quackfs_using_subcommand commit" -l catalog -d 'Catalog: sqlite://PATH or postgres://USER:PASS@HOST:PORT/DB [default: sqlite://DATA_DIR/catalog.sqlite]' -r
complete -c quackfs -n "__fish_quackfs_using_subcommand commit" -l store -d 'Object store: file://PATH or s3://BUCKET[/PREFIX] [default: file://DATA_DIR/objects]' -r
complete -c quackfs -n "__fish_quackfs_using_subcommand commit" -s r -l repo -d 'Which database [default: the one mounted where the current directory is, else the one chosen with `quackfs use`]' -r
complete -c quackfs -n "__fish_quackfs_using_subcommand commit" -l allow-empty -d 'Record a commit even if nothing changed'
complete -c quackfs -n "__fish_quackfs_using_subcommand commit" -l json -d 'Machine-readable JSON output'
complete -c quackfs -n "__fish_quackfs_using_subcommand commit" -s v -l verbose -d 'More logging on stderr (repeat for more); RUST_LOG overrides'
complete -c quackfs -n "__fish_quackfs_using_subcommand commit" -s q -l quiet -d 'Only errors on stderr'
complete -c quackfs -n "__fish_quackfs_using_subcommand commit" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c quackfs -n "__fish_quackfs_using_subcommand commit" -s V -l version -d 'Print version'
complete -c quackfs -n "__fish_quackfs_using_subcommand log" -s n -l max-count -d 'Show at most N commits' -r
complete -c quackfs -n "__fish_quackfs_using_subcommand log" -l at -d 'Start where the branch pointed at this time (same as REV@{TIME})' -r
complete -c quackfs -n "__fish_quackfs_using_subcommand log" -l data-dir -d 'Data directory: embedded catalog, objects, cache, local state [default: $XDG_DATA_HOME/quackfs]' -r -F
complete -c quackfs -n "__fish_quackfs_using_subcommand log" -l catalog -d 'Catalog: sqlite://PATH or postgres://USER:PASS@HOST:PORT/DB [default: sqlite://DATA_DIR/catalog.sqlite]' -r
complete -c quackfs -n "__fish_quackfs_using_subcommand log" -l store -d 'Object store: file://PATH or s3://BUCKET[/PREFIX] [default: file://DATA_DIR/objects]' -r
complete -c quackfs -n "__fish_quackfs_using_subcommand log" -s r -l repo -d 'Which database [default: the one mounted where the current directory is, else the one chosen with `quackfs use`]' -r
complete -c quackfs -n "__fish_quackfs_using_subcommand log" -l json -d 'Machine-readable JSON output'
complete -c quackfs -n "__fish_quackfs_using_subcommand log" -s v -l verbose -d 'More logging on stderr (repeat for more); RUST_LOG overrides'
complete -c quackfs -n "__fish_quackfs_using_subcommand log" -s q -l quiet -d 'Only errors on stderr'
complete -c quackfs -n "__fish_quackfs_using_subcommand log" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c quackfs -n "__fish_quackfs_using_subcommand log" -s V -l version -d 'Print version'
complete -c quackfs -n "__fish_quackfs_using_subcommand show" -l at -d 'Where the branch pointed at this time (same as REV@{TIME})' -r
complete -c quackfs -n "__fish_quackfs_using_subcommand show" -l data-dir -d 'Data directory: embedded catalog, objects, cache, local state [default: $XDG_DATA_HOME/quackfs]' -r -F
complete -c quackfs -n "__fish_quackfs_using_subcommand show" -l catalog -d 'Catalog: sqlite://PATH or postgres://USER:PASS@HOST:PORT/DB [default: sqlite://DATA_DIR/catalog.sqlite]' -r
complete -c quackfs -n "__fish_quackfs_using_subcommand show" -l store -d 'Object store: file://PATH or s3://BUCKET[/PREFIX] [default: file://DATA_DIR/objects]' -r
complete -c quackfs -n "__fish_quackfs_using_subcommand show" -s r -l repo -d 'Which database [default: the one mounted where the current directory is, else the one chosen with `quackfs use`]' -r
complete -c quackfs -n "__fish_quackfs_using_subcommand show" -l json -d 'Machine-readable JSON output'
complete -c quackfs -n "__fish_quackfs_using_subcommand show" -s v -l verbose -d 'More logging on stderr (repeat for more); RUST_LOG overrides'
complete -c quackfs -n "__fish_quackfs_using_subcommand show" -s q -l quiet -d 'Only errors on stderr'
complete -c quackfs -n "__fish_quackfs_using_subcommand show" -s h -l help -d 'Print help'
complete -c quackfs -n "__fish_quackfs_using_subcommand show" -s V -l version -d 'Print version'
complete -c quackfs -n "__fish_quackfs_using_subcommand status" -l data-dir -d 'Data directory: embedded catalog, objects, cache, local state [default: $XDG_DATA_HOME/quackfs]' -r -F
complete -c quackfs -n "__fish_quackfs_using_subcommand status" -l catalog -d 'Catalog: sqlite://PATH or postgres://USER:PASS@HOST:PORT/DB [default: sqlite://DATA_DIR/catalog.sqlite]' -r
complete -c quackfs -n "__fish_quackfs_using_subcommand status" -l store -d 'Object store: file://PATH or s3://BUCKET[/PREFIX] [default: file://DATA_DIR/objects]' -r
complete -c quackfs -n "__fish_quackfs_using_subcommand status" -s r -l repo -d 'Which database [default: the one mounted where the current directory is, else the one chosen with `quackfs use`]' -r
complete -c quackfs -n "__fish_quackfs_using_subcommand status" -l json -d 'Machine-readable JSON output'
complete -c quackfs -n "__fish_quackfs_using_subcommand status" -s v -l verbose -d 'More logging on stderr (repeat for more); RUST_LOG overrides'
complete -c quackfs -n "__fish_quackfs_using_subcommand status" -s q -l quiet -d 'Only errors on stderr'
complete -c quackfs -n "__fish_quackfs_using_subcommand status" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c quackfs -n "__fish_quackfs_using_subcommand status" -s V -l version -d 'Print version'
complete -c quackfs -n "__fish_quackfs_using_subcommand branch" -l at -d 'Start where REV pointed at this time (RFC 3339, YYYY-MM-DD, \'N hours ago\')' -r
complete -c quackfs -n "__fish_quackfs_using_subcommand branch" -l data-dir -d 'Data directory: embedded catalog, objects, cache, local state [default: $XDG_DATA_HOME/quackfs]' -r -F
complete -c quackfs -n "__fish_quackfs_using_subcommand branch" -l catalog -d 'Catalog: sqlite://PATH or postgres://USER:PASS@HOST:PORT/DB [default: sqlite://DATA_DIR/catalog.sqlite]' -r
complete -c quackfs -n "__fish_quackfs_using_subcommand branch" -l store -d 'Object store: file://PATH or s3://BUCKET[/PREFIX] [default: file://DATA_DIR/objects]' -r
complete -c quackfs -n "__fish_quackfs_using_subcommand branch" -s r -l repo -d 'Which database [default: the one mounted where the current directory is, else the one chosen with `quackfs use`]' -r
complete -c quackfs -n "__fish_quackfs_using_subcommand branch" -s d -l delete -d 'Delete the branch'
complete -c quackfs -n "__fish_quackfs_using_subcommand branch" -l json -d 'Machine-readable JSON output'
complete -c quackfs -n "__fish_quackfs_using_subcommand branch" -s v -l verbose -d 'More logging on stderr (repeat for more); RUST_LOG overrides'
complete -c quackfs -n "__fish_quackfs_using_subcommand branch" -s q -l quiet -d 'Only errors on stderr'
complete -c quackfs -n "__fish_quackfs_using_subcommand branch" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c quackfs -n "__fish_quackfs_using_subcommand branch" -s V -l version -d 'Print version'
complete -c quackfs -n "__fish_quackfs_using_subcommand tag" -l at -d 'Tag where REV pointed at this time' -r
complete -c quackfs -n "__fish_quackfs_using_subcommand tag" -l data-dir -d 'Data directory: embedded catalog, objects, cache, local state [default: $XDG_DATA_HOME/quackfs]' -r -F
complete -c quackfs -n "__fish_quackfs_using_subcommand tag" -l catalog -d 'Catalog: sqlite://PATH or postgres://USER:PASS@HOST:PORT/DB [default: sqlite://DATA_DIR/catalog.sqlite]' -r
complete -c quackfs -n "__fish_quackfs_using_subcommand tag" -l store -d 'Object store: file://PATH or s3://BUCKET[/PREFIX] [default: file://DATA_DIR/objects]' -r
complete -c quackfs -n "__fish_quackfs_using_subcommand tag" -s r -l repo -d 'Which database [default: the one mounted where the current directory is, else the one chosen with `quackfs use`]' -r
complete -c quackfs -n "__fish_quackfs_using_subcommand tag" -s d -l delete -d 'Delete the tag'
complete -c quackfs -n "__fish_quackfs_using_subcommand tag" -l json -d 'Machine-readable JSON output'
complete -c quackfs -n "__fish_quackfs_using_subcommand tag" -s v -l verbose -d 'More logging on stderr (repeat for more); RUST_LOG overrides'
complete -c quackfs -n "__fish_quackfs_using_subcommand tag" -s q -l quiet -d 'Only errors on stderr'
complete -c quackfs -n "__fish_quackfs_using_subcommand tag" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c quackfs -n "__fish_quackfs_using_subcommand tag" -s V -l version -d 'Print version'
complete -c quackfs -n "__fish_quackfs_using_subcommand reflog" -l data-dir -d 'Data directory: embedded catalog, objects, cache, local state [default: $XDG_DATA_HOME/quackfs]' -r -F
complete -c quackfs -n "__fish_quackfs_using_subcommand reflog" -l catalog -d 'Catalog: sqlite://PATH or postgres://USER:PASS@HOST:PORT/DB [default: sqlite://DATA_DIR/catalog.sqlite]' -r
complete -c quackfs -n "__fish_quackfs_using_subcommand reflog" -l store -d 'Object store: file://PATH or s3://BUCKET[/PREFIX] [default: file://DATA_DIR/objects]' -r
complete -c quackfs -n "__fish_quackfs_using_subcommand reflog" -s r -l repo -d 'Which database [default: the one mounted where the current directory is, else the one chosen with `quackfs use`]' -r
complete -c quackfs -n "__fish_quackfs_using_subcommand reflog" -l json -d 'Machine-readable JSON output'
complete -c quackfs -n "__fish_quackfs_using_subcommand reflog" -s v -l verbose -d 'More logging on stderr (repeat for more); RUST_LOG overrides'
complete -c quackfs -n "__fish_quackfs_using_subcommand reflog" -s q -l quiet -d 'Only errors on stderr'
complete -c quackfs -n "__fish_quackfs_using_subcommand reflog" -s h -l help -d 'Print help'
complete -c quackfs -n "__fish_quackfs_using_subcommand reflog" -s V -l version -d 'Print version'
complete -c quackfs -n "__fish_quackfs_using_subcommand reset" -l at -d 'Move it to where REV pointed at this time' -r
complete -c quackfs -n "__fish_quackfs_using_subcommand reset" -l data-dir -d 'Data directory: embedded catalog, objects, cache, local state [default: $XDG_DATA_HOME/quackfs]' -r -F
complete -c quackfs -n "__fish_quackfs_using_subcommand reset" -l catalog -d 'Catalog: sqlite://PATH or postgres://USER:PASS@HOST:PORT/DB [default: sqlite://DATA_DIR/catalog.sqlite]' -r
complete -c quackfs -n "__fish_quackfs_using_subcommand reset" -l store -d 'Object store: file://PATH or s3://BUCKET[/PREFIX] [default: file://DATA_DIR/objects]' -r
complete -c quackfs -n "__fish_quackfs_using_subcommand reset" -s r -l repo -d 'Which database [default: the one mounted where the current directory is, else the one chosen with `quackfs use`]' -r
complete -c quackfs -n "__fish_quackfs_using_subcommand reset" -l json -d 'Machine-readable JSON output'
complete -c quackfs -n "__fish_quackfs_using_subcommand reset" -s v -l verbose -d 'More logging on stderr (repeat for more); RUST_LOG overrides'
complete -c quackfs -n "__fish_quackfs_using_subcommand reset" -s q -l quiet -d 'Only errors on stderr'
complete -c quackfs -n "__fish_quackfs_using_subcommand reset" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c quackfs -n "__fish_quackfs_using_subcommand reset" -s V -l version -d 'Print version'
complete -c quackfs -n "__fish_quackfs_using_subcommand clone" -l at -d 'Clone where REV pointed at this time (same as REV@{TIME})' -r
complete -c quackfs -n "__fish_quackfs_using_subcommand clone" -l data-dir -d 'Data directory: embedded catalog, objects, cache, local state [default: $XDG_DATA_HOME/quackfs]' -r -F
complete -c quackfs -n "__fish_quackfs_using_subcommand clone" -l catalog -d 'Catalog: sqlite://PATH or postgres://USER:PASS@HOST:PORT/DB [default: sqlite://DATA_DIR/catalog.sqlite]' -r
complete -c quackfs -n "__fish_quackfs_using_subcommand clone" -l store -d 'Object store: file://PATH or s3://BUCKET[/PREFIX] [default: file://DATA_DIR/objects]' -r
complete -c quackfs -n "__fish_quackfs_using_subcommand clone" -s r -l repo -d 'Which database [default: the one mounted where the current directory is, else the one chosen with `quackfs use`]' -r
complete -c quackfs -n "__fish_quackfs_using_subcommand clone" -l json -d 'Machine-readable JSON output'
complete -c quackfs -n "__fish_quackfs_using_subcommand clone" -s v -l verbose -d 'More logging on stderr (repeat for more); RUST_LOG overrides'
complete -c quackfs -n "__fish_quackfs_using_subcommand clone" -s q -l quiet -d 'Only errors on stderr'
complete -c quackfs -n "__fish_quackfs_using_subcommand clone" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c quackfs -n "__fish_quackfs_using_subcommand clone" -s V -l version -d 'Print version'
complete -c quackfs -n "__fish_quackfs_using_subcommand diff" -l rows -d 'Compare rows, table by table (all tables, or only those named: NAME or SCHEMA.NAME)' -r
complete -c quackfs -n "__fish_quackfs_using_subcommand diff" -l show -d 'With --rows: up to N example rows per kind of change (shown with --json)' -r
complete -c quackfs -n "__fish_quackfs_using_subcommand diff" -l data-dir -d 'Data directory: embedded catalog, objects, cache, local state [default: $XDG_DATA_HOME/quackfs]' -r -F
complete -c quackfs -n "__fish_quackfs_using_subcommand diff" -l catalog -d 'Catalog: sqlite://PATH or postgres://USER:PASS@HOST:PORT/DB [default: sqlite://DATA_DIR/catalog.sqlite]' -r
complete -c quackfs -n "__fish_quackfs_using_subcommand diff" -l store -d 'Object store: file://PATH or s3://BUCKET[/PREFIX] [default: file://DATA_DIR/objects]' -r
complete -c quackfs -n "__fish_quackfs_using_subcommand diff" -s r -l repo -d 'Which database [default: the one mounted where the current directory is, else the one chosen with `quackfs use`]' -r
complete -c quackfs -n "__fish_quackfs_using_subcommand diff" -l scan-all -d 'With --rows: scan every table, also those whose storage is unchanged'
complete -c quackfs -n "__fish_quackfs_using_subcommand diff" -l json -d 'Machine-readable JSON output'
complete -c quackfs -n "__fish_quackfs_using_subcommand diff" -s v -l verbose -d 'More logging on stderr (repeat for more); RUST_LOG overrides'
complete -c quackfs -n "__fish_quackfs_using_subcommand diff" -s q -l quiet -d 'Only errors on stderr'
complete -c quackfs -n "__fish_quackfs_using_subcommand diff" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c quackfs -n "__fish_quackfs_using_subcommand diff" -s V -l version -d 'Print version'
complete -c quackfs -n "__fish_quackfs_using_subcommand apply" -s b -l branch -d 'The branch to apply them to [default: the current branch]' -r
complete -c quackfs -n "__fish_quackfs_using_subcommand apply" -s m -l message -d 'Message of the merge commit [default: "apply SOURCE onto BRANCH"]' -r
complete -c quackfs -n "__fish_quackfs_using_subcommand apply" -l data-dir -d 'Data directory: embedded catalog, objects, cache, local state [default: $XDG_DATA_HOME/quackfs]' -r -F
complete -c quackfs -n "__fish_quackfs_using_subcommand apply" -l catalog -d 'Catalog: sqlite://PATH or postgres://USER:PASS@HOST:PORT/DB [default: sqlite://DATA_DIR/catalog.sqlite]' -r
complete -c quackfs -n "__fish_quackfs_using_subcommand apply" -l store -d 'Object store: file://PATH or s3://BUCKET[/PREFIX] [default: file://DATA_DIR/objects]' -r
complete -c quackfs -n "__fish_quackfs_using_subcommand apply" -s r -l repo -d 'Which database [default: the one mounted where the current directory is, else the one chosen with `quackfs use`]' -r
complete -c quackfs -n "__fish_quackfs_using_subcommand apply" -l dry-run -d 'Show what would change; commit nothing'
complete -c quackfs -n "__fish_quackfs_using_subcommand apply" -l ours -d 'Resolve every conflicting row by keeping the branch\'s version'
complete -c quackfs -n "__fish_quackfs_using_subcommand apply" -l theirs -d 'Resolve every conflicting row by taking SOURCE\'s version'
complete -c quackfs -n "__fish_quackfs_using_subcommand apply" -l json -d 'Machine-readable JSON output'
complete -c quackfs -n "__fish_quackfs_using_subcommand apply" -s v -l verbose -d 'More logging on stderr (repeat for more); RUST_LOG overrides'
complete -c quackfs -n "__fish_quackfs_using_subcommand apply" -s q -l quiet -d 'Only errors on stderr'
complete -c quackfs -n "__fish_quackfs_using_subcommand apply" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c quackfs -n "__fish_quackfs_using_subcommand apply" -s V -l version -d 'Print version'
complete -c quackfs -n "__fish_quackfs_using_subcommand bisect" -l sql -d 'The query: one row, one boolean column (true = good), run with the database as the default catalog' -r
complete -c quackfs -n "__fish_quackfs_using_subcommand bisect" -l file -d 'The database file to query [default: the commit\'s only .duckdb file]' -r
complete -c quackfs -n "__fish_quackfs_using_subcommand bisect" -l data-dir -d 'Data directory: embedded catalog, objects, cache, local state [default: $XDG_DATA_HOME/quackfs]' -r -F
complete -c quackfs -n "__fish_quackfs_using_subcommand bisect" -l catalog -d 'Catalog: sqlite://PATH or postgres://USER:PASS@HOST:PORT/DB [default: sqlite://DATA_DIR/catalog.sqlite]' -r
complete -c quackfs -n "__fish_quackfs_using_subcommand bisect" -l store -d 'Object store: file://PATH or s3://BUCKET[/PREFIX] [default: file://DATA_DIR/objects]' -r
complete -c quackfs -n "__fish_quackfs_using_subcommand bisect" -s r -l repo -d 'Which database [default: the one mounted where the current directory is, else the one chosen with `quackfs use`]' -r
complete -c quackfs -n "__fish_quackfs_using_subcommand bisect" -l json -d 'Machine-readable JSON output'
complete -c quackfs -n "__fish_quackfs_using_subcommand bisect" -s v -l verbose -d 'More logging on stderr (repeat for more); RUST_LOG overrides'
complete -c quackfs -n "__fish_quackfs_using_subcommand bisect" -s q -l quiet -d 'Only errors on stderr'
complete -c quackfs -n "__fish_quackfs_using_subcommand bisect" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c quackfs -n "__fish_quackfs_using_subcommand bisect" -s V -l version -d 'Print version'
complete -c quackfs -n "__fish_quackfs_using_subcommand verify" -l data-dir -d 'Data directory: embedded catalog, objects, cache, local state [default: $XDG_DATA_HOME/quackfs]' -r -F
complete -c quackfs -n "__fish_quackfs_using_subcommand verify" -l catalog -d 'Catalog: sqlite://PATH or postgres://USER:PASS@HOST:PORT/DB [default: sqlite://DATA_DIR/catalog.sqlite]' -r
complete -c quackfs -n "__fish_quackfs_using_subcommand verify" -l store -d 'Object store: file://PATH or s3://BUCKET[/PREFIX] [default: file://DATA_DIR/objects]' -r
complete -c quackfs -n "__fish_quackfs_using_subcommand verify" -s r -l repo -d 'Which database [default: the one mounted where the current directory is, else the one chosen with `quackfs use`]' -r
complete -c quackfs -n "__fish_quackfs_using_subcommand verify" -l all -d 'Check every commit reachable from a branch or tag'
complete -c quackfs -n "__fish_quackfs_using_subcommand verify" -l json -d 'Machine-readable JSON output'
complete -c quackfs -n "__fish_quackfs_using_subcommand verify" -s v -l verbose -d 'More logging on stderr (repeat for more); RUST_LOG overrides'
complete -c quackfs -n "__fish_quackfs_using_subcommand verify" -s q -l quiet -d 'Only errors on stderr'
complete -c quackfs -n "__fish_quackfs_using_subcommand verify" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c quackfs -n "__fish_quackfs_using_subcommand verify" -s V -l version -d 'Print version'
complete -c quackfs -n "__fish_quackfs_using_subcommand drop" -l data-dir -d 'Data directory: embedded catalog, objects, cache, local state [default: $XDG_DATA_HOME/quackfs]' -r -F
complete -c quackfs -n "__fish_quackfs_using_subcommand drop" -l catalog -d 'Catalog: sqlite://PATH or postgres://USER:PASS@HOST:PORT/DB [default: sqlite://DATA_DIR/catalog.sqlite]' -r
complete -c quackfs -n "__fish_quackfs_using_subcommand drop" -l store -d 'Object store: file://PATH or s3://BUCKET[/PREFIX] [default: file://DATA_DIR/objects]' -r
complete -c quackfs -n "__fish_quackfs_using_subcommand drop" -s r -l repo -d 'Which database [default: the one mounted where the current directory is, else the one chosen with `quackfs use`]' -r
complete -c quackfs -n "__fish_quackfs_using_subcommand drop" -l yes -d 'Confirm the deletion'
complete -c quackfs -n "__fish_quackfs_using_subcommand drop" -l json -d 'Machine-readable JSON output'
complete -c quackfs -n "__fish_quackfs_using_subcommand drop" -s v -l verbose -d 'More logging on stderr (repeat for more); RUST_LOG overrides'
complete -c quackfs -n "__fish_quackfs_using_subcommand drop" -s q -l quiet -d 'Only errors on stderr'
complete -c quackfs -n "__fish_quackfs_using_subcommand drop" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c quackfs -n "__fish_quackfs_using_subcommand drop" -s V -l version -d 'Print version'
complete -c quackfs -n "__fish_quackfs_using_subcommand merge" -l data-dir -d 'Data directory: embedded catalog, objects, cache, local state [default: $XDG_DATA_HOME/quackfs]' -r -F
complete -c quackfs -n "__fish_quackfs_using_subcommand merge" -l catalog -d 'Catalog: sqlite://PATH or postgres://USER:PASS@HOST:PORT/DB [default: sqlite://DATA_DIR/catalog.sqlite]' -r
complete -c quackfs -n "__fish_quackfs_using_subcommand merge" -l store -d 'Object store: file://PATH or s3://BUCKET[/PREFIX] [default: file://DATA_DIR/objects]' -r
complete -c quackfs -n "__fish_quackfs_using_subcommand merge" -s r -l repo -d 'Which database [default: the one mounted where the current directory is, else the one chosen with `quackfs use`]' -r
complete -c quackfs -n "__fish_quackfs_using_subcommand merge" -l dry-run -d 'Show what would be done without writing anything'
complete -c quackfs -n "__fish_quackfs_using_subcommand merge" -l json -d 'Machine-readable JSON output'
complete -c quackfs -n "__fish_quackfs_using_subcommand merge" -s v -l verbose -d 'More logging on stderr (repeat for more); RUST_LOG overrides'
complete -c quackfs -n "__fish_quackfs_using_subcommand merge" -s q -l quiet -d 'Only errors on stderr'
complete -c quackfs -n "__fish_quackfs_using_subcommand merge" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c quackfs -n "__fish_quackfs_using_subcommand merge" -s V -l version -d 'Print version'
complete -c quackfs -n "__fish_quackfs_using_subcommand gc" -l retain -d 'Keep history this long, e.g. 7d, 12h, 0s' -r
complete -c quackfs -n "__fish_quackfs_using_subcommand gc" -l grace -d 'Wait this long between marking a layer and deleting it, e.g. 1h, 0s' -r
complete -c quackfs -n "__fish_quackfs_using_subcommand gc" -l data-dir -d 'Data directory: embedded catalog, objects, cache, local state [default: $XDG_DATA_HOME/quackfs]' -r -F
complete -c quackfs -n "__fish_quackfs_using_subcommand gc" -l catalog -d 'Catalog: sqlite://PATH or postgres://USER:PASS@HOST:PORT/DB [default: sqlite://DATA_DIR/catalog.sqlite]' -r
complete -c quackfs -n "__fish_quackfs_using_subcommand gc" -l store -d 'Object store: file://PATH or s3://BUCKET[/PREFIX] [default: file://DATA_DIR/objects]' -r
complete -c quackfs -n "__fish_quackfs_using_subcommand gc" -s r -l repo -d 'Which database [default: the one mounted where the current directory is, else the one chosen with `quackfs use`]' -r
complete -c quackfs -n "__fish_quackfs_using_subcommand gc" -l dry-run -d 'Show what would go, and how many bytes, without deleting anything'
complete -c quackfs -n "__fish_quackfs_using_subcommand gc" -l json -d 'Machine-readable JSON output'
complete -c quackfs -n "__fish_quackfs_using_subcommand gc" -s v -l verbose -d 'More logging on stderr (repeat for more); RUST_LOG overrides'
complete -c quackfs -n "__fish_quackfs_using_subcommand gc" -s q -l quiet -d 'Only errors on stderr'
complete -c quackfs -n "__fish_quackfs_using_subcommand gc" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c quackfs -n "__fish_quackfs_using_subcommand gc" -s V -l version -d 'Print version'
complete -c quackfs -n "__fish_quackfs_using_subcommand completions" -l data-dir -d 'Data directory: embedded catalog, objects, cache, local state [default: $XDG_DATA_HOME/quackfs]' -r -F
complete -c quackfs -n "__fish_quackfs_using_subcommand completions" -l catalog -d 'Catalog: sqlite://PATH or postgres://USER:PASS@HOST:PORT/DB [default: sqlite://DATA_DIR/catalog.sqlite]' -r
complete -c quackfs -n "__fish_quackfs_using_subcommand completions" -l store -d 'Object store: file://PATH or s3://BUCKET[/PREFIX] [default: file://DATA_DIR/objects]' -r
complete -c quackfs -n "__fish_quackfs_using_subcommand completions" -s r -l repo -d 'Which database [default: the one mounted where the current directory is, else the one chosen with `quackfs use`]' -r
complete -c quackfs -n "__fish_quackfs_using_subcommand completions" -l json -d 'Machine-readable JSON output'
complete -c quackfs -n "__fish_quackfs_using_subcommand completions" -s v -l verbose -d 'More logging on stderr (repeat for more); RUST_LOG overrides'
complete -c quackfs -n "__fish_quackfs_using_subcommand completions" -s q -l quiet -d 'Only errors on stderr'
complete -c quackfs -n "__fish_quackfs_using_subcommand completions" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c quackfs -n "__fish_quackfs_using_subcommand completions" -s V -l version -d 'Print version'
complete -c quackfs -n "__fish_quackfs_using_subcommand help; and not __fish_seen_subcommand_from init use repos import export mount umount commit log show status branch tag reflog reset clone diff apply bisect verify drop merge gc completions help" -f -a "init" -d 'Create a new, empty database with branch `main`; it becomes the current database'
complete -c quackfs -n "__fish_quackfs_using_subcommand help; and not __fish_seen_subcommand_from init use repos import export mount umount commit log show status branch tag reflog reset clone diff apply bisect verify drop merge gc completions help" -f -a "use" -d 'Set the current database (and branch) used when -r is not given'
complete -c quackfs -n "__fish_quackfs_using_subcommand help; and not __fish_seen_subcommand_from init use repos import export mount umount commit log show status branch tag reflog reset clone diff apply bisect verify drop merge gc completions help" -f -a "repos" -d 'List databases: name, branches, commits, logical size of `main`, stored bytes, creation time'
complete -c quackfs -n "__fish_quackfs_using_subcommand help; and not __fish_seen_subcommand_from init use repos import export mount umount commit log show status branch tag reflog reset clone diff apply bisect verify drop merge gc completions help" -f -a "import" -d 'Commit local files onto a branch (each under its base name)'
complete -c quackfs -n "__fish_quackfs_using_subcommand help; and not __fish_seen_subcommand_from init use repos import export mount umount commit log show status branch tag reflog reset clone diff apply bisect verify drop merge gc completions help" -f -a "export" -d 'Write every file of a revision into a directory, byte-identical to what a mount shows'
complete -c quackfs -n "__fish_quackfs_using_subcommand help; and not __fish_seen_subcommand_from init use repos import export mount umount commit log show status branch tag reflog reset clone diff apply bisect verify drop merge gc completions help" -f -a "mount" -d 'Serve a revision through FUSE so that DuckDB (or anything) works on DIR/*.duckdb'
complete -c quackfs -n "__fish_quackfs_using_subcommand help; and not __fish_seen_subcommand_from init use repos import export mount umount commit log show status branch tag reflog reset clone diff apply bisect verify drop merge gc completions help" -f -a "umount" -d 'Flush, release the branch and unmount a quackfs mount; waits until the mount process is done'
complete -c quackfs -n "__fish_quackfs_using_subcommand help; and not __fish_seen_subcommand_from init use repos import export mount umount commit log show status branch tag reflog reset clone diff apply bisect verify drop merge gc completions help" -f -a "commit" -d 'Seal everything synced on the branch into a commit and print its id'
complete -c quackfs -n "__fish_quackfs_using_subcommand help; and not __fish_seen_subcommand_from init use repos import export mount umount commit log show status branch tag reflog reset clone diff apply bisect verify drop merge gc completions help" -f -a "log" -d 'Show history, newest first: id, time, author, kind, message, bytes added'
complete -c quackfs -n "__fish_quackfs_using_subcommand help; and not __fish_seen_subcommand_from init use repos import export mount umount commit log show status branch tag reflog reset clone diff apply bisect verify drop merge gc completions help" -f -a "show" -d 'Show one commit: parent, files and sizes, layers, bytes'
complete -c quackfs -n "__fish_quackfs_using_subcommand help; and not __fish_seen_subcommand_from init use repos import export mount umount commit log show status branch tag reflog reset clone diff apply bisect verify drop merge gc completions help" -f -a "status" -d 'Show the current database and branch, its head, uncommitted bytes, mounts (writable and read-only), and where data lives'
complete -c quackfs -n "__fish_quackfs_using_subcommand help; and not __fish_seen_subcommand_from init use repos import export mount umount commit log show status branch tag reflog reset clone diff apply bisect verify drop merge gc completions help" -f -a "branch" -d 'List, create or delete branches'
complete -c quackfs -n "__fish_quackfs_using_subcommand help; and not __fish_seen_subcommand_from init use repos import export mount umount commit log show status branch tag reflog reset clone diff apply bisect verify drop merge gc completions help" -f -a "tag" -d 'List, create or delete tags (immutable names for commits)'
complete -c quackfs -n "__fish_quackfs_using_subcommand help; and not __fish_seen_subcommand_from init use repos import export mount umount commit log show status branch tag reflog reset clone diff apply bisect verify drop merge gc completions help" -f -a "reflog" -d 'Show where a branch pointed, when, and why (newest first)'
complete -c quackfs -n "__fish_quackfs_using_subcommand help; and not __fish_seen_subcommand_from init use repos import export mount umount commit log show status branch tag reflog reset clone diff apply bisect verify drop merge gc completions help" -f -a "reset" -d 'Move a branch to another revision (recorded in the reflog)'
complete -c quackfs -n "__fish_quackfs_using_subcommand help; and not __fish_seen_subcommand_from init use repos import export mount umount commit log show status branch tag reflog reset clone diff apply bisect verify drop merge gc completions help" -f -a "clone" -d 'Create a new database whose `main` starts at REV, sharing all its layers (zero copy)'
complete -c quackfs -n "__fish_quackfs_using_subcommand help; and not __fish_seen_subcommand_from init use repos import export mount umount commit log show status branch tag reflog reset clone diff apply bisect verify drop merge gc completions help" -f -a "diff" -d 'Show what changed between two revisions: per file from the extent maps (no data read), and with --rows per table'
complete -c quackfs -n "__fish_quackfs_using_subcommand help; and not __fish_seen_subcommand_from init use repos import export mount umount commit log show status branch tag reflog reset clone diff apply bisect verify drop merge gc completions help" -f -a "apply" -d 'Bring the changes SOURCE made since the merge base onto a branch'
complete -c quackfs -n "__fish_quackfs_using_subcommand help; and not __fish_seen_subcommand_from init use repos import export mount umount commit log show status branch tag reflog reset clone diff apply bisect verify drop merge gc completions help" -f -a "bisect" -d 'Find the first commit between GOOD and BAD where a query turns false'
complete -c quackfs -n "__fish_quackfs_using_subcommand help; and not __fish_seen_subcommand_from init use repos import export mount umount commit log show status branch tag reflog reset clone diff apply bisect verify drop merge gc completions help" -f -a "verify" -d 'Re-read every byte of a revision (or of every commit) and check it against its checksums'
complete -c quackfs -n "__fish_quackfs_using_subcommand help; and not __fish_seen_subcommand_from init use repos import export mount umount commit log show status branch tag reflog reset clone diff apply bisect verify drop merge gc completions help" -f -a "drop" -d 'Delete a database: its branches, tags and history names go'
complete -c quackfs -n "__fish_quackfs_using_subcommand help; and not __fish_seen_subcommand_from init use repos import export mount umount commit log show status branch tag reflog reset clone diff apply bisect verify drop merge gc completions help" -f -a "merge" -d 'Compact the current database\'s layers offline, beside live mounts'
complete -c quackfs -n "__fish_quackfs_using_subcommand help; and not __fish_seen_subcommand_from init use repos import export mount umount commit log show status branch tag reflog reset clone diff apply bisect verify drop merge gc completions help" -f -a "gc" -d 'Delete layers and objects nothing needs any more (all databases of the catalog)'
complete -c quackfs -n "__fish_quackfs_using_subcommand help; and not __fish_seen_subcommand_from init use repos import export mount umount commit log show status branch tag reflog reset clone diff apply bisect verify drop merge gc completions help" -f -a "completions" -d 'Print a shell completion script (bash, zsh, fish, elvish, powershell)'
complete -c quackfs -n "__fish_quackfs_using_subcommand help; and not __fish_seen_subcommand_from init use repos import export mount umount commit log show status branch tag reflog reset clone diff apply bisect verify drop merge gc completions help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
