//! `make demo`: a private bus, twofoldd, a demo user, enrollment with
//! `twofold setup`, and a login through real libpam with the built module.
//! Nothing of the host's login setup is touched; the demo user is removed at
//! the end. With a terminal it is interactive (scan the QR code, type codes);
//! without one it runs the same path scripted with oathtool and exits 0 on success.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use anyhow::{Context, Result, bail};
use std::io::IsTerminal;
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use twofold_e2e::{Bus, Daemon, PamService, artifacts, enroll, oathtool, pam, test_user};

const DEMO_USER: &str = "twofold-demo";
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigint(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

fn main() -> ExitCode {
    // SAFETY: installs an async-signal-safe handler (one atomic store); a
    // handler, unlike SIG_IGN, is reset in the children we exec.
    unsafe { libc::signal(libc::SIGINT, on_sigint as *const () as libc::sighandler_t) };
    let created = match user_exists(DEMO_USER) {
        Ok(true) => false,
        Ok(false) => true,
        Err(e) => return fail(e),
    };
    let result = run();
    if created {
        let _ = Command::new("userdel").arg(DEMO_USER).status();
    }
    match result {
        Ok(()) => {
            let user = if created {
                "the demo user are gone"
            } else {
                "its state are gone (the user twofold-demo existed before the demo and was left in place)"
            };
            println!("\nDemo finished; the private bus, the daemon and {user}.");
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}

fn fail(e: anyhow::Error) -> ExitCode {
    eprintln!("demo failed: {e:#}");
    ExitCode::FAILURE
}

fn user_exists(name: &str) -> Result<bool> {
    Ok(Command::new("id")
        .arg(name)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()?
        .success())
}

fn run() -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("run the demo as root (it starts twofoldd and creates a throwaway user)");
    }
    test_user(DEMO_USER)?;
    let bus = Bus::start()?;
    let daemon = Daemon::start(&bus, "")?;
    let pam = PamService::new("")?;
    println!("twofold demo");
    println!("  private system bus: {}", bus.address);
    println!("  twofoldd log:       {}", daemon.log_path().display());
    println!(
        "  PAM service file:   {}",
        pam.confdir().join(&pam.name).display()
    );
    println!("  demo user:          {DEMO_USER}\n");
    if std::io::stdin().is_terminal() && std::io::stdout().is_terminal() {
        interactive(&bus, &pam)
    } else {
        scripted(&bus, &pam, &daemon)
    }
}

fn interactive(bus: &Bus, pam: &PamService) -> Result<()> {
    println!(
        "Step 1: {DEMO_USER} runs `twofold setup`. Scan the QR code with an authenticator app"
    );
    println!("(no phone? `oathtool --totp -b SECRET` in another terminal computes the codes).\n");
    let setup = bus
        .command_as(DEMO_USER, artifacts().twofold())
        .arg("setup")
        .status()?;
    if INTERRUPTED.load(Ordering::SeqCst) || !setup.success() {
        bail!("setup did not complete");
    }
    loop {
        println!(
            "\nStep 2: a login through PAM with pam_twofold.so. Type the code your app shows now."
        );
        println!("(The code that confirmed the enrollment is spent: wait for the next one.)\n");
        let login = pam_login(bus, pam)?;
        if INTERRUPTED.load(Ordering::SeqCst) {
            bail!("interrupted");
        }
        if login == pam::SUCCESS {
            println!(
                "\nLogged in with a second factor. Press Enter to log in again, or type q to quit."
            );
        } else {
            println!("\nLogin refused (PAM result {login}). Press Enter to try again, q to quit.");
        }
        let mut answer = String::new();
        if std::io::stdin().read_line(&mut answer)? == 0
            || answer.trim() == "q"
            || INTERRUPTED.load(Ordering::SeqCst)
        {
            return Ok(());
        }
    }
}

fn pam_login(bus: &Bus, pam: &PamService) -> Result<i32> {
    let status = bus
        .command(artifacts().pam_driver())
        .arg("--confdir")
        .arg(pam.confdir())
        .args([
            "--service",
            &pam.name,
            "--user",
            DEMO_USER,
            "--rhost",
            "127.0.0.1",
        ])
        .status()?;
    Ok(status.code().unwrap_or(-1))
}

fn scripted(bus: &Bus, pam: &PamService, daemon: &Daemon) -> Result<()> {
    println!("No terminal: running the demo scripted, with codes from oathtool.\n");
    let e = enroll(bus, DEMO_USER).context("enrolling the demo user")?;
    println!(
        "Enrolled {DEMO_USER}: {}",
        e.uri.replace(&e.secret, "<secret>")
    );
    println!("Backup codes issued: {}", e.backup_codes.len());
    let code = oathtool(&e.secret, 0)?;
    let steps: [(&str, String, i32); 3] = [
        ("a code from oathtool", code.clone(), pam::SUCCESS),
        ("the same code again (replay)", code, pam::AUTH_ERR),
        ("a wrong code", "000000".into(), pam::AUTH_ERR),
    ];
    for (what, input, expected) in steps {
        let attempt = pam.login(bus, DEMO_USER, format!("{input}\n").as_bytes())?;
        let verdict = if attempt.code == pam::SUCCESS {
            "logged in"
        } else {
            "refused"
        };
        let shown: Vec<&str> = attempt
            .stderr
            .lines()
            .chain(attempt.stdout.lines())
            .map(|l| l.trim_start_matches("Verification code: "))
            .filter(|l| !l.is_empty() && !l.starts_with("pam_authenticate:"))
            .collect();
        println!(
            "Login with {what}: asked \"Verification code:\", {verdict}; the user was shown {shown:?}"
        );
        if attempt.code != expected {
            bail!(
                "expected PAM result {expected}, got {}: {attempt:?}\n{}",
                attempt.code,
                daemon.log()
            );
        }
    }
    println!("\ntwofoldd's log of these logins:");
    for line in daemon.log().lines().filter(|l| l.contains("login ")) {
        println!("  {line}");
    }
    Ok(())
}
