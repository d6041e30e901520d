//! Test accounts and groups (tf-*), made and removed on the host by the tests.

use crate::*;
use anyhow::{Context, Result, anyhow, bail};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

pub fn test_user(name: &str) -> Result<u32> {
    let _guard = ACCOUNTS.lock().unwrap_or_else(|p| p.into_inner());
    test_user_locked(name)
}

pub(crate) fn test_user_locked(name: &str) -> Result<u32> {
    let uid = || -> Option<u32> {
        let out = Command::new("id").arg("-u").arg(name).output().ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().parse().ok())?
    };
    if let Some(uid) = uid() {
        return Ok(uid);
    }
    // Other test binaries may race us; useradd's own lock serializes, and an
    // "already exists" failure is fine if the user is there afterwards.
    // Regular accounts (uid >= 1000), like the people a report lists.
    let _ = Command::new("useradd")
        .args([
            "--no-create-home",
            "--shell",
            "/usr/sbin/nologin",
            "--comment",
            "twofold test user",
        ])
        .arg(name)
        .output()
        .context("useradd")?;
    uid().ok_or_else(|| anyhow!("could not create test user {name}"))
}

/// Remove a test user that only the calling test uses (its account, not
/// its twofold state).
pub fn remove_test_user(name: &str) -> Result<()> {
    let _guard = ACCOUNTS.lock().unwrap_or_else(|p| p.into_inner());
    let out = Command::new("userdel")
        .arg(name)
        .output()
        .context("userdel")?;
    if !out.status.success() {
        bail!("userdel {name}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// A second name for `of`'s uid (like `toor` for root), created once after `of`.
pub fn test_alias(name: &str, of: &str) -> Result<u32> {
    let _guard = ACCOUNTS.lock().unwrap_or_else(|p| p.into_inner());
    let uid = test_user_locked(of)?;
    if Command::new("id")
        .arg("-u")
        .arg(name)
        .output()?
        .status
        .success()
    {
        return Ok(uid);
    }
    let _ = Command::new("useradd")
        .args([
            "--non-unique",
            "--uid",
            &uid.to_string(),
            "--no-create-home",
            "--shell",
            "/usr/sbin/nologin",
        ])
        .args(["--no-user-group", "--gid", &uid_gid(of)?, name])
        .output()?;
    Ok(uid)
}

pub(crate) fn uid_gid(user: &str) -> Result<String> {
    let out = Command::new("id").arg("-g").arg(user).output()?;
    let code = String::from_utf8(out.stdout)?.trim().to_string();
    used_secret(&code);
    Ok(code)
}

/// Give `user` a password (for pam_unix in the shipped stacks).
pub fn set_password(user: &str, password: &str) -> Result<()> {
    used_secret(password);
    let _guard = ACCOUNTS.lock().unwrap_or_else(|p| p.into_inner());
    let mut child = Command::new("chpasswd").stdin(Stdio::piped()).spawn()?;
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(format!("{user}:{password}\n").as_bytes())?;
    if !child.wait()?.success() {
        bail!("chpasswd failed for {user}");
    }
    Ok(())
}

/// The password of the test users for this run, random: it is set in the
/// host's shadow file for pam_unix (tests/tests/pamd.rs), and must not open
/// those accounts to anyone who reads this repository.
pub fn test_password() -> &'static str {
    static PASSWORD: OnceLock<String> = OnceLock::new();
    PASSWORD.get_or_init(|| {
        use rand::Rng;
        let mut rng = rand::rng();
        let password: String = (0..24)
            .map(|_| char::from(rng.sample(rand::distr::Alphanumeric)))
            .collect();
        used_secret(&password);
        password
    })
}

/// A group with the given members (created or completed once).
pub fn test_group(name: &str, members: &[&str]) -> Result<()> {
    let _guard = ACCOUNTS.lock().unwrap_or_else(|p| p.into_inner());
    let _ = Command::new("groupadd").arg(name).output()?;
    for member in members {
        let _ = Command::new("usermod")
            .args(["--append", "--groups", name, member])
            .output()?;
    }
    Ok(())
}
