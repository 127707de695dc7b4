//! The command line: every subcommand and option as clap reads them, and the shell
//! completions and man pages made from the same definition. The binary (`src/main.rs`)
//! parses with it and hands each subcommand to the module that does it.

use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "inboxd",
    version,
    about = "Uploads every complete file dropped into inbox folders to S3, exactly once"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run the daemon in the foreground (as systemd does).
    Run(Common),
    /// Process everything in the inboxes now, then exit: 0 if every file succeeded, 1 if not.
    Once(Common),
    /// Validate the configuration, check every folder and probe each inbox's bucket; exit 0 if
    /// all is well.
    Check(CheckArgs),
    /// Print every ledger record as one JSON object per line. Asks the running daemon;
    /// without one, reads the ledger (never writing it).
    Ledger(Common),
    /// Show what the running daemon is doing: per inbox the files waiting and the oldest
    /// one, S3, recent failures. Without a running daemon, what the folders hold.
    Status {
        #[command(flatten)]
        common: Common,
        /// Print the daemon's /status JSON instead.
        #[arg(long)]
        json: bool,
    },
    /// Move files from failed/ back into their inbox (reason files removed) so that they go
    /// through the pipeline again. Works whether or not the daemon runs.
    Retry {
        #[command(flatten)]
        common: Common,
        /// Only this inbox.
        #[arg(long)]
        inbox: Option<String>,
        /// Only these files (relative to failed/, or full paths in it); default: all.
        files: Vec<PathBuf>,
    },
    /// The folder checks of `check --user`, run by `check` itself as that user; prints JSON.
    #[command(name = "check-folders", hide = true)]
    CheckFolders(Common),
    /// Writes the shell completions and man pages for this command line into DIR
    /// (`completions/`, `man/`); the packaging/ copies are made with it (see README).
    #[command(name = "generate-assets", hide = true)]
    GenerateAssets {
        /// Where to write them (packaging/ for the committed copies).
        dir: PathBuf,
    },
}

#[derive(Args)]
pub struct Common {
    /// The configuration file.
    #[arg(
        long,
        short,
        env = "INBOXD_CONFIG",
        default_value = "/etc/inboxd/inboxd.toml"
    )]
    pub config: PathBuf,
}

#[derive(Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub common: Common,
    /// Check the folders as this user, the one the service runs as (needs root unless it is
    /// you): `inboxd check --user inboxd`.
    #[arg(long, value_name = "NAME")]
    pub user: Option<String>,
}

impl Command {
    /// The options every subcommand that reads the configuration shares; `None` for the one
    /// that does not (`generate-assets`).
    pub fn common(&self) -> Option<&Common> {
        match self {
            Command::Run(c)
            | Command::Once(c)
            | Command::Ledger(c)
            | Command::CheckFolders(c)
            | Command::Status { common: c, .. }
            | Command::Retry { common: c, .. }
            | Command::Check(CheckArgs { common: c, .. }) => Some(c),
            Command::GenerateAssets { .. } => None,
        }
    }
}

/// Shell completions (bash, zsh, fish) into `dir/completions/` and one man page per visible
/// command into `dir/man/`, all from the clap definition above, so they cannot drift from it
/// (tests/cli.rs compares the committed copies in packaging/ with a fresh run).
pub fn generate_assets(dir: &Path) -> std::io::Result<()> {
    use clap::CommandFactory as _;
    use clap_complete::Shell;
    let completions = dir.join("completions");
    let man = dir.join("man");
    std::fs::create_dir_all(&completions)?;
    std::fs::create_dir_all(&man)?;
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        clap_complete::generate_to(shell, &mut Cli::command(), "inboxd", &completions)?;
    }
    clap_mangen::generate_to(Cli::command(), &man)
}
