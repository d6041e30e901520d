//! The command line of `twofold`: its clap definition, apart from what each
//! command does, so that the documentation tests and the shell completions
//! read the same definition the command parses with.

use std::path::PathBuf;

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
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
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
    /// Replace your backup codes with a new set (needs a current code: from your app, or e-mailed now when e-mail is your only method).
    ///
    /// Reads the code as one line from stdin; the old backup codes stop working.
    BackupCodes(CodesFile),
    /// Turn two-factor authentication off for your account (needs a current code, as for backup-codes).
    ///
    /// Reads the code as one line from stdin. Refused while your rule requires
    /// two-factor authentication.
    Disable,
    /// List your authenticator apps (name, added, last used, clock), or remove one.
    Authenticators {
        #[command(subcommand)]
        action: Option<AppsCommand>,
    },
    /// List the hosts where a login with a code is remembered, so no code is asked for a while.
    Devices {
        /// Forget them all: the next login from each asks for a code again.
        #[arg(long)]
        forget: bool,
    },
    /// Commands for administrators (root or the daemon's admin group).
    #[command(subcommand)]
    Admin(AdminCommand),
    /// Print the shell completion script for twofold.
    ///
    /// The packages install those for bash and zsh; for another shell, e.g.
    /// `twofold completions fish > ~/.config/fish/completions/twofold.fish`.
    Completions {
        /// The shell: bash, zsh, fish, elvish or powershell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Args)]
pub struct SetupArgs {
    #[command(flatten)]
    pub file: CodesFile,
    /// Draw the QR code in plain ASCII (the default when the locale is not UTF-8).
    #[arg(long)]
    pub ascii: bool,
    /// How codes reach you: an authenticator app, or e-mail (a code is sent to
    /// prove the address). Asked on a terminal when not given; `totp` otherwise.
    #[arg(long, value_enum)]
    pub method: Option<Method>,
    /// The address for `--method email` (asked on a terminal when not given).
    #[arg(long, value_name = "ADDRESS")]
    pub address: Option<String>,
    /// Add an authenticator app under this name (e.g. phone, keepassxc), beside
    /// the ones you have, after a current code from one of them (at most 5).
    #[arg(long, value_name = "NAME", conflicts_with_all = ["address"])]
    pub name: Option<String>,
}

#[derive(Subcommand)]
pub enum AppsCommand {
    /// Remove one of your authenticator apps (needs a current code; never your last method while your rule requires two-factor authentication).
    Remove {
        /// The app's name, as listed.
        name: String,
    },
}

/// A second-factor method to set up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Method {
    /// An authenticator app (TOTP codes).
    Totp,
    /// Codes sent by e-mail at each login.
    Email,
}

#[derive(Args)]
pub struct CodesFile {
    /// Also write the backup codes to this new file (mode 0600; an existing file is never overwritten).
    #[arg(long, value_name = "PATH")]
    pub backup_codes_file: Option<PathBuf>,
}

#[derive(Subcommand)]
pub enum AdminCommand {
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
    /// Remove one of a user's authenticator apps (not their last method: `reset` is for that).
    RemoveAuthenticator {
        /// The user.
        user: String,
        /// The app's name, as `twofold admin status USER` lists it.
        name: String,
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
