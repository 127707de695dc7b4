# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_inboxd_global_optspecs
    string join \n h/help V/version
end

function __fish_inboxd_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_inboxd_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_inboxd_using_subcommand
    set -l cmd (__fish_inboxd_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c inboxd -n "__fish_inboxd_needs_command" -s h -l help -d 'Print help'
complete -c inboxd -n "__fish_inboxd_needs_command" -s V -l version -d 'Print version'
complete -c inboxd -n "__fish_inboxd_needs_command" -f -a "run" -d 'Run the daemon in the foreground (as systemd does)'
complete -c inboxd -n "__fish_inboxd_needs_command" -f -a "once" -d 'Process everything in the inboxes now, then exit: 0 if every file succeeded, 1 if not'
complete -c inboxd -n "__fish_inboxd_needs_command" -f -a "check" -d 'Validate the configuration, check every folder and probe each inbox\'s bucket; exit 0 if all is well'
complete -c inboxd -n "__fish_inboxd_needs_command" -f -a "ledger" -d 'Print every ledger record as one JSON object per line. Asks the running daemon; without one, reads the ledger (never writing it)'
complete -c inboxd -n "__fish_inboxd_needs_command" -f -a "status" -d 'Show what the running daemon is doing: per inbox the files waiting and the oldest one, S3, recent failures. Without a running daemon, what the folders hold'
complete -c inboxd -n "__fish_inboxd_needs_command" -f -a "retry" -d 'Move files from failed/ back into their inbox (reason files removed) so that they go through the pipeline again. Works whether or not the daemon runs'
complete -c inboxd -n "__fish_inboxd_needs_command" -f -a "check-folders" -d 'The folder checks of `check --user`, run by `check` itself as that user; prints JSON'
complete -c inboxd -n "__fish_inboxd_needs_command" -f -a "generate-assets" -d 'Writes the shell completions and man pages for this command line into DIR (`completions/`, `man/`); the packaging/ copies are made with it (see README)'
complete -c inboxd -n "__fish_inboxd_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c inboxd -n "__fish_inboxd_using_subcommand run" -s c -l config -d 'The configuration file' -r -F
complete -c inboxd -n "__fish_inboxd_using_subcommand run" -s h -l help -d 'Print help'
complete -c inboxd -n "__fish_inboxd_using_subcommand once" -s c -l config -d 'The configuration file' -r -F
complete -c inboxd -n "__fish_inboxd_using_subcommand once" -s h -l help -d 'Print help'
complete -c inboxd -n "__fish_inboxd_using_subcommand check" -s c -l config -d 'The configuration file' -r -F
complete -c inboxd -n "__fish_inboxd_using_subcommand check" -l user -d 'Check the folders as this user, the one the service runs as (needs root unless it is you): `inboxd check --user inboxd`' -r
complete -c inboxd -n "__fish_inboxd_using_subcommand check" -s h -l help -d 'Print help'
complete -c inboxd -n "__fish_inboxd_using_subcommand ledger" -s c -l config -d 'The configuration file' -r -F
complete -c inboxd -n "__fish_inboxd_using_subcommand ledger" -s h -l help -d 'Print help'
complete -c inboxd -n "__fish_inboxd_using_subcommand status" -s c -l config -d 'The configuration file' -r -F
complete -c inboxd -n "__fish_inboxd_using_subcommand status" -l json -d 'Print the daemon\'s /status JSON instead'
complete -c inboxd -n "__fish_inboxd_using_subcommand status" -s h -l help -d 'Print help'
complete -c inboxd -n "__fish_inboxd_using_subcommand retry" -s c -l config -d 'The configuration file' -r -F
complete -c inboxd -n "__fish_inboxd_using_subcommand retry" -l inbox -d 'Only this inbox' -r
complete -c inboxd -n "__fish_inboxd_using_subcommand retry" -s h -l help -d 'Print help'
complete -c inboxd -n "__fish_inboxd_using_subcommand check-folders" -s c -l config -d 'The configuration file' -r -F
complete -c inboxd -n "__fish_inboxd_using_subcommand check-folders" -s h -l help -d 'Print help'
complete -c inboxd -n "__fish_inboxd_using_subcommand generate-assets" -s h -l help -d 'Print help'
complete -c inboxd -n "__fish_inboxd_using_subcommand help; and not __fish_seen_subcommand_from run once check ledger status retry check-folders generate-assets help" -f -a "run" -d 'Run the daemon in the foreground (as systemd does)'
complete -c inboxd -n "__fish_inboxd_using_subcommand help; and not __fish_seen_subcommand_from run once check ledger status retry check-folders generate-assets help" -f -a "once" -d 'Process everything in the inboxes now, then exit: 0 if every file succeeded, 1 if not'
complete -c inboxd -n "__fish_inboxd_using_subcommand help; and not __fish_seen_subcommand_from run once check ledger status retry check-folders generate-assets help" -f -a "check" -d 'Validate the configuration, check every folder and probe each inbox\'s bucket; exit 0 if all is well'
complete -c inboxd -n "__fish_inboxd_using_subcommand help; and not __fish_seen_subcommand_from run once check ledger status retry check-folders generate-assets help" -f -a "ledger" -d 'Print every ledger record as one JSON object per line. Asks the running daemon; without one, reads the ledger (never writing it)'
complete -c inboxd -n "__fish_inboxd_using_subcommand help; and not __fish_seen_subcommand_from run once check ledger status retry check-folders generate-assets help" -f -a "status" -d 'Show what the running daemon is doing: per inbox the files waiting and the oldest one, S3, recent failures. Without a running daemon, what the folders hold'
complete -c inboxd -n "__fish_inboxd_using_subcommand help; and not __fish_seen_subcommand_from run once check ledger status retry check-folders generate-assets help" -f -a "retry" -d 'Move files from failed/ back into their inbox (reason files removed) so that they go through the pipeline again. Works whether or not the daemon runs'
complete -c inboxd -n "__fish_inboxd_using_subcommand help; and not __fish_seen_subcommand_from run once check ledger status retry check-folders generate-assets help" -f -a "check-folders" -d 'The folder checks of `check --user`, run by `check` itself as that user; prints JSON'
complete -c inboxd -n "__fish_inboxd_using_subcommand help; and not __fish_seen_subcommand_from run once check ledger status retry check-folders generate-assets help" -f -a "generate-assets" -d 'Writes the shell completions and man pages for this command line into DIR (`completions/`, `man/`); the packaging/ copies are made with it (see README)'
complete -c inboxd -n "__fish_inboxd_using_subcommand help; and not __fish_seen_subcommand_from run once check ledger status retry check-folders generate-assets help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
