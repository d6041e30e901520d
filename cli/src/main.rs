//! `twofold`: enroll in and administer twofold second-factor logins. Every
//! command is a call to the `twofoldd` daemon on the system bus, which knows
//! the caller by the uid the bus reports.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

mod account;
mod admin;
mod bus;
mod codes;
mod prompt;
mod report;
mod setup;
mod show;
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
    Setup(SetupArgs),
    /// Show whether two-factor authentication is set up for you, and whether it is required.
    Status {
        /// Print one line of JSON instead of sentences.
        #[arg(long)]
        json: bool,
    },
    /// Replace your backup codes with a new set (needs a current code from your app).
    ///
    /// Reads the code as one line from stdin; the old backup codes stop working.
    BackupCodes(CodesFile),
    /// Turn two-factor authentication off for your account (needs a current code from your app).
    ///
    /// Reads the code as one line from stdin. Refused while your rule requires
    /// two-factor authentication.
    Disable,
    /// List the hosts where a login with a code is remembered, so no code is asked for a while.
    Devices {
        /// Forget them all: the next login from each asks for a code again.
        #[arg(long)]
        forget: bool,
    },
    /// Commands for administrators (root or the daemon's admin group).
    #[command(subcommand)]
    Admin(AdminCommand),
}

#[derive(Args)]
struct SetupArgs {
    #[command(flatten)]
    file: CodesFile,
    /// Draw the QR code in plain ASCII (the default when the locale is not UTF-8).
    #[arg(long)]
    ascii: bool,
}

#[derive(Args)]
struct CodesFile {
    /// Also write the backup codes to this new file (mode 0600; an existing file is never overwritten).
    #[arg(long, value_name = "PATH")]
    backup_codes_file: Option<PathBuf>,
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Show a user's enrollment, backup codes left, throttle and rule.
    Status {
        /// The user to look at.
        user: String,
        /// Print one line of JSON instead of sentences.
        #[arg(long)]
        json: bool,
    },
    /// List every local account: enrolled or not, last login, rule, mode and enforcement date.
    #[command(visible_alias = "list")]
    Report {
        /// Print a JSON array (one object a line) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show which rule applies to a user's login, and why, step by step.
    Explain {
        /// The user who would log in.
        user: String,
        /// The PAM service of the login.
        #[arg(long, value_name = "S", default_value = "sshd")]
        service: String,
        /// The remote host the login would come from (default: none, a local login).
        #[arg(long, value_name = "H")]
        rhost: Option<String>,
    },
    /// Remove a user's enrollment: they enroll again at their next login or with `twofold setup`.
    Reset {
        /// The user whose enrollment to remove.
        user: String,
        /// Do not ask for confirmation (needed when not on a terminal).
        #[arg(long, short = 'y')]
        yes: bool,
    },
    /// Require two-factor authentication for a user, whatever the policy's rules say.
    Require {
        /// The user.
        user: String,
    },
    /// Exempt a user from two-factor authentication, whatever the policy's rules say.
    Exempt {
        /// The user.
        user: String,
    },
    /// Remove a user's `require` or `exempt` override: the policy's rules apply again.
    Clear {
        /// The user.
        user: String,
    },
    /// Let a user who has been locked out by too many wrong codes try again now.
    Unlock {
        /// The user to unlock.
        user: String,
    },
    /// Forget a user's remembered devices: their next login from each asks for a code.
    ForgetDevices {
        /// The user.
        user: String,
    },
    /// Check a policy file (default: the one twofoldd uses) and print a summary.
    ///
    /// Only root may check a file other than the configured one. Errors show
    /// path:line:column and exit with status 1.
    CheckConfig {
        /// The file to check.
        path: Option<PathBuf>,
    },
    /// Make twofoldd read its policy file again (as SIGHUP does).
    ///
    /// An invalid file is refused and the policy in force stays.
    Reload,
}

/// How the command was called is wrong (exit status 2, as for clap's own
/// usage errors), though clap could not tell.
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Setup(args) => setup::run(args.file.backup_codes_file, args.ascii),
        Command::Status { json } => status::run(json),
        Command::BackupCodes(file) => codes::regenerate(file.backup_codes_file),
        Command::Disable => account::disable(),
        Command::Devices { forget } => account::devices(forget),
        Command::Admin(admin) => run_admin(admin),
    }
}

fn run_admin(command: AdminCommand) -> anyhow::Result<()> {
    use admin::Override;
    match command {
        AdminCommand::Status { user, json } => admin::status(&user, json),
        AdminCommand::Report { json } => admin::report(json),
        AdminCommand::Explain {
            user,
            service,
            rhost,
        } => admin::explain(&user, &service, rhost.as_deref().unwrap_or("")),
        AdminCommand::Reset { user, yes } => admin::reset(&user, yes),
        AdminCommand::Require { user } => admin::set_override(&user, Override::Require),
        AdminCommand::Exempt { user } => admin::set_override(&user, Override::Exempt),
        AdminCommand::Clear { user } => admin::set_override(&user, Override::Clear),
        AdminCommand::Unlock { user } => admin::unlock(&user),
        AdminCommand::ForgetDevices { user } => admin::forget_devices(&user),
        AdminCommand::CheckConfig { path } => admin::check_config(path.as_deref()),
        AdminCommand::Reload => admin::reload(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("twofold: {}", report(&e));
            if e.downcast_ref::<UsageError>().is_some() {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
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
            Command::Setup(SetupArgs {
                file: CodesFile {
                    backup_codes_file: Some(_)
                },
                ascii: false
            })
        ));
        let cli = Cli::try_parse_from(["twofold", "admin", "unlock", "alice"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Admin(AdminCommand::Unlock { .. })
        ));
        assert!(Cli::try_parse_from(["twofold", "admin", "status"]).is_err());
    }

    fn admin(args: &[&str]) -> AdminCommand {
        let cli = Cli::try_parse_from(["twofold", "admin"].iter().chain(args)).unwrap();
        match cli.command {
            Command::Admin(command) => command,
            _ => panic!("not an admin command: {args:?}"),
        }
    }

    #[test]
    fn parses_the_new_commands() {
        assert!(matches!(
            Cli::try_parse_from(["twofold", "disable"]).unwrap().command,
            Command::Disable
        ));
        assert!(matches!(
            Cli::try_parse_from(["twofold", "devices", "--forget"])
                .unwrap()
                .command,
            Command::Devices { forget: true }
        ));
        assert!(matches!(
            admin(&["list"]),
            AdminCommand::Report { json: false }
        ));
        assert!(matches!(
            admin(&["report", "--json"]),
            AdminCommand::Report { json: true }
        ));
        match admin(&["explain", "alice"]) {
            AdminCommand::Explain { service, rhost, .. } => {
                assert_eq!(service, "sshd");
                assert_eq!(rhost, None);
            }
            _ => panic!("not explain"),
        }
        match admin(&[
            "explain",
            "alice",
            "--service",
            "login",
            "--rhost",
            "192.0.2.1",
        ]) {
            AdminCommand::Explain { service, rhost, .. } => {
                assert_eq!(service, "login");
                assert_eq!(rhost.as_deref(), Some("192.0.2.1"));
            }
            _ => panic!("not explain"),
        }
        assert!(matches!(
            admin(&["reset", "alice", "--yes"]),
            AdminCommand::Reset { yes: true, .. }
        ));
        assert!(matches!(
            admin(&["reset", "alice"]),
            AdminCommand::Reset { yes: false, .. }
        ));
        assert!(matches!(
            admin(&["require", "alice"]),
            AdminCommand::Require { .. }
        ));
        assert!(matches!(
            admin(&["exempt", "alice"]),
            AdminCommand::Exempt { .. }
        ));
        assert!(matches!(
            admin(&["clear", "alice"]),
            AdminCommand::Clear { .. }
        ));
        assert!(matches!(
            admin(&["forget-devices", "alice"]),
            AdminCommand::ForgetDevices { .. }
        ));
        assert!(matches!(
            admin(&["check-config"]),
            AdminCommand::CheckConfig { path: None }
        ));
        assert!(matches!(
            admin(&["check-config", "/tmp/p.toml"]),
            AdminCommand::CheckConfig { path: Some(_) }
        ));
        assert!(matches!(admin(&["reload"]), AdminCommand::Reload));
        assert!(Cli::try_parse_from(["twofold", "admin", "require"]).is_err());
    }

    #[test]
    fn a_usage_error_is_found_under_context() {
        let e = anyhow::Error::new(UsageError("run it with --yes".into())).context("reset");
        assert!(e.downcast_ref::<UsageError>().is_some());
        assert_eq!(report(&e), "reset: run it with --yes");
    }
}
