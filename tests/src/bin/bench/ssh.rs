//! `ssh N`: whole SSH logins through a real sshd, twofold beside pam_google_authenticator.

use super::*;

/// Whole SSH logins through throwaway sshds: password only (the shipped
/// `sshd` stack without pam_twofold), password + twofold code (the shipped
/// stack), password + pam_google_authenticator code (the same stack with
/// that module in twofold's place), interleaved, `n` of each; the wall time
/// of the whole `ssh` run.
pub(crate) fn ssh(n: usize) -> Result<()> {
    use twofold_e2e::ssh::{SshClient, Sshd, SshdSetup, packaged_stack};
    use_release_build();
    const PASSWORD: &str = "bench horse 9";
    let bus = Bus::start()?;
    let daemon = Daemon::start_with_policy(&bus, "", "[default]\nmode = \"require\"\n")?;
    let with_code = packaged_stack("sshd", "")?;
    let module = artifacts().module.display().to_string();
    let password_only: String = with_code
        .lines()
        .filter(|l| l.trim_start().starts_with('#') || !l.contains(&module))
        .map(|l| format!("{l}\n"))
        .collect();
    let google_dir = tempfile::tempdir()?;
    let with_google: String = with_code
        .lines()
        .map(|l| {
            if l.trim_start().starts_with('#') || !l.contains(&module) {
                format!("{l}\n")
            } else {
                format!(
                    "auth required pam_google_authenticator.so secret={}/${{USER}} user=root\n",
                    google_dir.path().display()
                )
            }
        })
        .collect();
    // One user per login with a code: each TOTP step is accepted once.
    // Removed at the end, whatever happens (they have no password outside
    // the throwaway sshd's namespace anyway).
    struct Remove(Vec<String>);
    impl Drop for Remove {
        fn drop(&mut self) {
            for user in &self.0 {
                let _ = Command::new("userdel").arg(user).output();
            }
        }
    }
    let names: Vec<String> = (0..n).map(|i| format!("tf-sshbench-{i:02}")).collect();
    let _remove = Remove(names.clone());
    for user in &names {
        twofold_e2e::test_user(user)?;
    }
    let accounts: Vec<(&str, &str)> = names.iter().map(|u| (u.as_str(), PASSWORD)).collect();
    let start = |pam_stack: String| {
        Sshd::start(
            &bus,
            &SshdSetup {
                pam_stack,
                extra_config: "",
                accounts: &accounts,
            },
        )
    };
    let sshds = [
        ("password only", start(password_only)?, 1),
        ("password + pam_twofold", start(with_code)?, 2),
        (
            "password + pam_google_authenticator",
            start(with_google)?,
            2,
        ),
    ];
    let mut users = Vec::with_capacity(n);
    for user in &names {
        // The same secret for both modules; each keeps its own used steps.
        let secret = twofold_e2e::enroll(&bus, user)?.secret;
        let file = google_dir.path().join(user);
        std::fs::write(
            &file,
            format!("{secret}\n\" WINDOW_SIZE 3\n\" DISALLOW_REUSE\n\" TOTP_AUTH\n"),
        )?;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600))?;
        users.push((user.clone(), secret));
    }
    wait_for_step_margin(20);
    let mut times: Vec<Vec<u64>> = vec![Vec::with_capacity(n); sshds.len()];
    for (i, (user, secret)) in users.iter().enumerate() {
        let code = twofold_e2e::oathtool(secret, 0)?;
        let answer = |prompt: &str| {
            if prompt.ends_with("Password: ") {
                PASSWORD.into()
            } else {
                code.clone()
            }
        };
        let client = SshClient::new(user);
        // Rotate which goes first, so that none always meets a warm cache.
        for k in 0..sshds.len() {
            let which = (i + k) % sshds.len();
            let (what, sshd, prompts) = &sshds[which];
            let login = client.login(sshd, answer)?;
            if !login.logged_in() || login.status != 0 {
                bail!("{what} login failed: {login:#?}\n{}", daemon.log());
            }
            if login.prompts.len() != *prompts {
                bail!("unexpected prompts for {what}: {:?}", login.prompts);
            }
            times[which].push(login.elapsed.as_micros() as u64);
        }
    }
    // Each triple ran back to back: differences within it cancel slow spells.
    let paired = |which: usize| {
        let mut d: Vec<i64> = times[0]
            .iter()
            .zip(&times[which])
            .map(|(p, t)| *t as i64 - *p as i64)
            .collect();
        d.sort_unstable();
        d[d.len() / 2] as f64 / 1000.0
    };
    let ms = |us: u64| us as f64 / 1000.0;
    println!(
        "twofold bench: whole SSH logins through throwaway sshds on 127.0.0.1 ({n} each, interleaved)"
    );
    println!(
        "| login | median | min | max | added over password only (median of paired differences) |"
    );
    println!("| --- | --- | --- | --- | --- |");
    for (which, (what, _, _)) in sshds.iter().enumerate() {
        let mut v = times[which].clone();
        v.sort_unstable();
        println!(
            "| {what} | {:.1} ms | {:.1} ms | {:.1} ms | {} |",
            ms(percentile(&v, 50.0)),
            ms(v[0]),
            ms(v[v.len() - 1]),
            if which == 0 {
                "-".to_string()
            } else {
                format!("{:.1} ms", paired(which))
            }
        );
    }
    println!(
        "pam_twofold adds {:.1} ms, pam_google_authenticator {:.1} ms",
        paired(1),
        paired(2)
    );
    Ok(())
}
