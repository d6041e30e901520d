//! `make demo`: a private bus, twofoldd (with its login socket, which the
//! module in sshd uses, as with systemd's `twofoldd.socket`), a demo user and
//! a throwaway sshd on 127.0.0.1 that asks for a code. With a terminal it waits while you log in
//! from a second terminal (enrolling at the first login); without one (CI)
//! it runs the same logins with OpenSSH's client and oathtool and exits 0 on
//! success. Nothing of the host's login setup is touched; Ctrl-C stops
//! everything and removes the demo user.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use anyhow::{Context, Result, bail};
use std::io::IsTerminal;
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use twofold_e2e::ssh::{SshClient, SshLogin, Sshd, SshdSetup, packaged_stack};
use twofold_e2e::{Bus, Daemon, oathtool, uri_secret};
use twofold_protocol::text::group_key;

const DEMO_USER: &str = "twofold-demo";
/// Enrollment at the first login, as a host in its `require` phase.
const POLICY: &str = "unenrolled_require = \"enroll\"\n[default]\nmode = \"require\"\n";
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

fn main() -> ExitCode {
    // SAFETY: installs an async-signal-safe handler (one atomic store); a
    // handler, unlike SIG_IGN, is reset in the children we exec.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return fail(anyhow::anyhow!(
            "run the demo as root (it starts twofoldd and sshd and creates a throwaway user)"
        ));
    }
    let created = match create_demo_user() {
        Ok(created) => created,
        Err(e) => return fail(e),
    };
    let result = run();
    let user = if created {
        let _ = Command::new("userdel")
            .args(["--remove", DEMO_USER])
            .stderr(Stdio::null())
            .status();
        "the demo user are gone"
    } else {
        "its state are gone (the user twofold-demo existed before the demo and was left in place)"
    };
    match result {
        Ok(()) => {
            println!("\nDemo finished; sshd, the private bus, the daemon and {user}.");
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}

fn fail(e: anyhow::Error) -> ExitCode {
    eprintln!("demo failed: {e:#}");
    ExitCode::FAILURE
}

/// The demo user, with a home, a shell and a fresh password; `true` if the
/// demo created it (and so removes it).
fn create_demo_user() -> Result<bool> {
    let exists = Command::new("id")
        .arg(DEMO_USER)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()?
        .success();
    if !exists {
        // Locked and without a shell on the host: only the throwaway sshd
        // gives it a password and a shell.
        let out = Command::new("useradd")
            .args(["--create-home", "--shell", "/usr/sbin/nologin"])
            .args(["--comment", "twofold demo", DEMO_USER])
            .output()
            .context("useradd")?;
        if !out.status.success() {
            bail!("useradd: {}", String::from_utf8_lossy(&out.stderr));
        }
    }
    Ok(!exists)
}

fn run() -> Result<()> {
    let password = format!("demo-{:06}", rand::random_range(0..1_000_000));
    let bus = Bus::start()?;
    let daemon = Daemon::start_with_policy(&bus, "", POLICY)?;
    let sshd = Sshd::start(
        &bus,
        &SshdSetup {
            pam_stack: packaged_stack("sshd", "")?,
            extra_config: "",
            // The password and shell exist only inside sshd's namespace.
            accounts: &[(DEMO_USER, &password)],
        },
    )?;
    println!("twofold demo: password, then a code, through a real sshd");
    println!("  sshd:               127.0.0.1 port {}", sshd.port);
    println!("  PAM stack:          packaging/pam.d/sshd (password, then pam_twofold.so)");
    println!("  private system bus: {}", bus.address);
    println!(
        "  login socket:       {} (the module's logins, without the bus)",
        daemon.login_socket().display()
    );
    println!("  twofoldd log:       {}", daemon.log_path().display());
    println!("  demo user:          {DEMO_USER}, password {password}\n");
    if std::io::stdin().is_terminal() && std::io::stdout().is_terminal() {
        interactive(&daemon, &sshd, &password)
    } else {
        scripted(&daemon, &sshd, &password)
    }
}

fn interactive(daemon: &Daemon, sshd: &Sshd, password: &str) -> Result<()> {
    println!("In a second terminal, log in:\n");
    println!("    ssh -p {} {DEMO_USER}@127.0.0.1\n", sshd.port);
    println!("1. Type the password ({password}).");
    println!("2. The first time, you enroll: scan the QR code with an authenticator app");
    println!("   (no phone? `oathtool --totp -b KEY` with the key shown), type the code,");
    println!("   and note a backup code. The same login then goes on.");
    println!("3. Log out and log in again: password, then the code your app shows now.");
    println!("   A code works once; a backup code works too, once.\n");
    println!("twofoldd's log follows. Press Ctrl-C here to stop everything.\n");
    let mut shown = 0;
    while !INTERRUPTED.load(Ordering::SeqCst) {
        let log = daemon.log();
        for line in log.lines().skip(shown) {
            println!("  {line}");
        }
        shown = log.lines().count();
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(())
}

/// What a person at the keyboard sees, with the key hidden.
fn transcript(login: &SshLogin, secret: Option<&str>) {
    for prompt in &login.prompts {
        let mut shown = prompt.clone();
        if let Some(secret) = secret {
            shown = shown.replace(secret, "<key>");
            shown = shown.replace(group_key(secret).as_str(), "<key>");
        }
        for line in shown.lines() {
            println!("  | {line}");
        }
    }
    for line in login.stderr.lines().filter(|l| !l.trim().is_empty()) {
        println!("  | {line}");
    }
}

fn scripted(daemon: &Daemon, sshd: &Sshd, password: &str) -> Result<()> {
    println!(
        "No terminal: running the demo scripted, with OpenSSH's ssh and codes from oathtool.\n"
    );
    let client = SshClient::new(DEMO_USER);
    let mut secret = None;
    let first = client.login(sshd, |prompt: &str| {
        if prompt.ends_with("Password: ") {
            return password.into();
        }
        if let Some(uri) = prompt.lines().find_map(|l| l.strip_prefix("Key URI: ")) {
            let key = uri_secret(uri).unwrap_or_default();
            let code = oathtool(&key, 0).unwrap_or_default();
            secret = Some(key);
            return code;
        }
        String::new()
    })?;
    println!("First login (enrolls inside the SSH login):");
    transcript(&first, secret.as_deref());
    let secret = match (first.logged_in(), secret) {
        (true, Some(secret)) => secret,
        _ => bail!(
            "the first login did not enroll and log in:\n{first:#?}\n{}",
            daemon.log()
        ),
    };
    println!("  => logged in (exit {})\n", first.status);

    let code = oathtool(&secret, 1)?;
    let steps = [
        ("with the code the app shows", code.as_str(), true),
        ("with the same code again (replay)", code.as_str(), false),
        ("with a wrong code", "000000", false),
    ];
    for (what, input, expected) in steps {
        let login = client.login(sshd, |prompt: &str| {
            if prompt.ends_with("Password: ") {
                password.into()
            } else {
                input.into()
            }
        })?;
        println!("Login {what}:");
        transcript(&login, None);
        let verdict = if login.logged_in() {
            "logged in"
        } else {
            "refused"
        };
        println!("  => {verdict}\n");
        if login.logged_in() != expected {
            bail!("expected {expected}: {login:#?}\n{}", daemon.log());
        }
    }
    println!("twofoldd's log of these logins:");
    for line in daemon
        .log()
        .lines()
        .filter(|l| l.contains("login ") || l.contains("enroll"))
    {
        println!("  {line}");
    }
    Ok(())
}
