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

use std::process::ExitCode;

use clap::{CommandFactory, Parser};
use twofold_cli::args::{AdminCommand, AppsCommand, Cli, Command};

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
        Command::Setup(args) => setup::run(args),
        Command::Status { json } => status::run(json),
        Command::BackupCodes(file) => codes::regenerate(file.backup_codes_file),
        Command::Disable => account::disable(),
        Command::Devices { forget } => account::devices(forget),
        Command::Authenticators { action } => match action {
            None => account::authenticators(),
            Some(AppsCommand::Remove { name }) => account::remove_authenticator(&name),
        },
        Command::Admin(admin) => run_admin(admin),
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "twofold",
                &mut std::io::stdout(),
            );
            Ok(())
        }
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
        AdminCommand::RemoveAuthenticator { user, name } => {
            admin::remove_authenticator(&user, &name)
        }
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
    use twofold_cli::args::{CodesFile, SetupArgs};

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
                ascii: false,
                method: None,
                address: None,
                name: None,
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
    fn completions_offer_every_command() {
        for shell in [clap_complete::Shell::Bash, clap_complete::Shell::Zsh] {
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "twofold", &mut out);
            let text = String::from_utf8(out).unwrap();
            for command in Cli::command().get_subcommands().chain(
                Cli::command()
                    .find_subcommand("admin")
                    .unwrap()
                    .get_subcommands(),
            ) {
                assert!(
                    text.contains(command.get_name()),
                    "{shell}: {}",
                    command.get_name()
                );
            }
        }
        assert!(matches!(
            Cli::try_parse_from(["twofold", "completions", "zsh"])
                .unwrap()
                .command,
            Command::Completions {
                shell: clap_complete::Shell::Zsh
            }
        ));
    }

    #[test]
    fn a_usage_error_is_found_under_context() {
        let e = anyhow::Error::new(UsageError("run it with --yes".into())).context("reset");
        assert!(e.downcast_ref::<UsageError>().is_some());
        assert_eq!(report(&e), "reset: run it with --yes");
    }
}
