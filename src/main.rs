//! The `inboxd` binary: reads the command line ([`inboxd::cli`]), loads the configuration,
//! and hands each subcommand to the module that does it.
//!
//! Exit codes, one rule for every command (README, "Exit codes"): 0 all good; 1 something
//! outside the configuration is missing or refuses (a folder, the bucket, the credentials, the
//! ledger in use, a file that did not make it for `once`, a fatal runtime error); 2 the
//! configuration or the command line is wrong.

use std::process::ExitCode;

use clap::Parser as _;
use inboxd::cli::{Cli, Command, generate_assets};
use inboxd::config::Settings;
use inboxd::operator::{ledger_command, retry_command, status_command};
use inboxd::run::Mode;

/// Something outside the configuration is missing or refuses (see the module doc).
const REFUSED: u8 = inboxd::run::EXIT_REFUSED;
/// The configuration or the command line is wrong.
const CONFIG_ERROR: u8 = inboxd::run::EXIT_CONFIG_ERROR;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            // --help and --version are not errors; everything else is a usage error.
            return if e.use_stderr() {
                ExitCode::from(CONFIG_ERROR)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    if let Command::GenerateAssets { dir } = &cli.command {
        return match generate_assets(dir) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("inboxd: cannot write into {}: {e}", dir.display());
                ExitCode::from(REFUSED)
            }
        };
    }
    let Some(c) = cli.command.common() else {
        return ExitCode::SUCCESS; // generate-assets, handled above
    };
    let settings = match Settings::load(&c.config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("inboxd: {e}");
            return ExitCode::from(CONFIG_ERROR);
        }
    };
    match cli.command {
        Command::Ledger(_) => ledger_command(&settings),
        Command::Check(args) => inboxd::check::check(settings, args.user.as_deref()),
        Command::CheckFolders(_) => inboxd::check::check_folders(&settings),
        Command::Run(_) => inboxd::lifecycle::run(settings, Mode::Daemon),
        Command::Once(_) => inboxd::lifecycle::run(settings, Mode::Once),
        Command::Status { json, .. } => status_command(&settings, json),
        Command::Retry { inbox, files, .. } => retry_command(&settings, inbox.as_deref(), &files),
        Command::GenerateAssets { .. } => ExitCode::SUCCESS, // handled above
    }
}
