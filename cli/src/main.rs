//! `twofold`: enroll in and administer twofold second-factor logins. Every
//! command is a call to the `twofoldd` daemon on the system bus, which knows
//! the caller by the uid the bus reports.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

mod admin;
mod bus;
mod codes;
mod prompt;
mod setup;
mod status;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "twofold",
    version,
    about = "Set up and check two-factor authentication (TOTP) for your logins",
    long_about = "Set up and check two-factor authentication (TOTP) for your logins.\n\n\
        Every command asks the twofoldd daemon on the system bus, which acts for the \
        user running the command. Commands under `admin` need root or the daemon's admin group.",
    after_help = "Exit status: 0 on success, 1 if the command was refused or failed, 2 for usage errors."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Enroll: scan a QR code into your authenticator app, confirm with a code, get backup codes.
    ///
    /// On a terminal this is interactive. With stdout not a terminal, it prints the
    /// otpauth:// URI as the first line of stdout, reads one code line from stdin and
    /// prints the backup codes on stdout, one a line.
    Setup(CodesFile),
    /// Show whether two-factor authentication is set up for you.
    Status {
        /// Print one line of JSON instead of sentences.
        #[arg(long)]
        json: bool,
    },
    /// Replace your backup codes with a new set (needs a current code from your app).
    ///
    /// Reads the code as one line from stdin; the old backup codes stop working.
    BackupCodes(CodesFile),
    /// Commands for administrators (root or the daemon's admin group).
    #[command(subcommand)]
    Admin(AdminCommand),
}

#[derive(Args)]
struct CodesFile {
    /// Also write the backup codes to this new file (mode 0600; an existing file is never overwritten).
    #[arg(long, value_name = "PATH")]
    backup_codes_file: Option<PathBuf>,
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Show a user's enrollment, backup codes left and throttle.
    Status {
        /// The user to look at.
        user: String,
        /// Print one line of JSON instead of sentences.
        #[arg(long)]
        json: bool,
    },
    /// Let a user who has been locked out by too many wrong codes try again now.
    Unlock {
        /// The user to unlock.
        user: String,
    },
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Setup(file) => setup::run(file.backup_codes_file),
        Command::Status { json } => status::run(json),
        Command::BackupCodes(file) => codes::regenerate(file.backup_codes_file),
        Command::Admin(AdminCommand::Status { user, json }) => admin::status(&user, json),
        Command::Admin(AdminCommand::Unlock { user }) => admin::unlock(&user),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("twofold: {}", report(&e));
            ExitCode::FAILURE
        }
    }
}

/// What failed, then why. Some errors repeat their source in their own
/// text; a cause already said is left out.
fn report(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let part = cause.to_string();
        if text.contains(&part) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&part);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn reports_each_cause_once() {
        let io = std::io::Error::from(std::io::ErrorKind::NotFound);
        let e = anyhow::Error::new(io).context(format!(
            "connect: {}",
            std::io::Error::from(std::io::ErrorKind::NotFound)
        ));
        let e = e.context("cannot reach");
        assert_eq!(report(&e), "cannot reach: connect: entity not found");
    }

    #[test]
    fn cli_definition_is_valid() {
        Cli::command().debug_assert();
    }

    #[test]
    fn parses_the_commands() {
        let cli =
            Cli::try_parse_from(["twofold", "setup", "--backup-codes-file", "/tmp/x"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Setup(CodesFile {
                backup_codes_file: Some(_)
            })
        ));
        let cli = Cli::try_parse_from(["twofold", "admin", "unlock", "alice"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Admin(AdminCommand::Unlock { .. })
        ));
        assert!(Cli::try_parse_from(["twofold", "admin", "status"]).is_err());
    }
}
