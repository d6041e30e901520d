//! Codes from `oathtool`, and enrollment through `twofold setup` run as a test user.

use crate::*;
use anyhow::{Context, Result, bail};
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The code for `now + steps × 30 s`, computed by oathtool (an independent implementation).
pub fn oathtool(secret_base32: &str, steps: i64) -> Result<String> {
    let at = unix_now() as i64 + steps * 30;
    let out = Command::new("oathtool")
        .args(["--totp", "--base32", &format!("--now=@{at}"), secret_base32])
        .output()
        .context("running oathtool (apt-get install oathtool)")?;
    if !out.status.success() {
        bail!("oathtool failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8(out.stdout)?.trim().to_string())
}

/// Sleep until at least `secs` seconds remain in the current 30 s step, so a
/// sequence of codes computed now stays inside the ±1 window.
pub fn wait_for_step_margin(secs: u64) {
    let into = unix_now() % 30;
    if 30 - into < secs {
        std::thread::sleep(Duration::from_secs(30 - into) + Duration::from_millis(200));
    }
}

/// What `twofold setup` gave a user.
#[derive(Debug, Clone)]
pub struct Enrolled {
    pub uri: String,
    pub secret: String,
    pub backup_codes: Vec<String>,
}

/// Enroll `user` with `twofold setup` run as that user through a pipe,
/// confirming with the code of the previous step (so the current and the
/// next step are still free for logins).
pub fn enroll(bus: &Bus, user: &str) -> Result<Enrolled> {
    wait_for_step_margin(10);
    enroll_confirming(bus, user, -1)
}

/// `twofold setup` through a pipe, confirmed with oathtool's code for the
/// step `steps` away from now (no wait for a step boundary).
pub fn enroll_confirming(bus: &Bus, user: &str, steps: i64) -> Result<Enrolled> {
    let mut child = bus
        .command_as(user, artifacts().twofold())
        .args(["setup", "--method", "totp"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut stdout = BufReader::new(child.stdout.take().context("stdout")?);
    let mut uri = String::new();
    stdout.read_line(&mut uri)?;
    let uri = uri.trim().to_string();
    let Some(secret) = uri_secret(&uri) else {
        // Say why: what setup wrote on stderr before it gave up.
        let (_, err, status) = answer_and_finish(child, stdout, b"")?;
        bail!("no secret in setup output {uri:?} ({status}): {err}");
    };
    let code = oathtool(&secret, steps)?;
    let (rest, err, status) = answer_and_finish(child, stdout, format!("{code}\n").as_bytes())?;
    if !status.success() {
        bail!("twofold setup failed for {user}: {err}");
    }
    let backup_codes: Vec<String> = rest
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    for c in &backup_codes {
        used_secret(c);
        used_secret(&c.replace('-', ""));
    }
    Ok(Enrolled {
        uri,
        secret,
        backup_codes,
    })
}

/// Write `input` to a running child (closing its stdin), then collect the
/// rest of its stdout, its stderr and its exit status.
pub(crate) fn answer_and_finish(
    mut child: Child,
    mut stdout: BufReader<std::process::ChildStdout>,
    input: &[u8],
) -> Result<(String, String, std::process::ExitStatus)> {
    child.stdin.take().context("stdin")?.write_all(input)?;
    let mut rest = String::new();
    stdout.read_to_string(&mut rest)?;
    let mut err = String::new();
    child
        .stderr
        .take()
        .context("stderr")?
        .read_to_string(&mut err)?;
    Ok((rest, err, child.wait()?))
}

/// The `secret=` parameter of an otpauth URI.
pub fn uri_secret(uri: &str) -> Option<String> {
    let query = uri.split_once('?')?.1;
    let secret = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("secret="))
        .map(String::from)?;
    used_secret(&secret);
    used_secret(uri);
    Some(secret)
}

/// `twofold setup --name` through a pipe on `bus`: the proof, then the new
/// key's code for the step `steps` away. Returns the new key (base32).
pub fn add_app(bus: &Bus, user: &str, name: &str, proof: &str, steps: i64) -> String {
    let mut child = bus
        .command_as(user, artifacts().twofold())
        .args(["setup", "--name", name])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    writeln!(stdin, "{proof}").unwrap();
    stdin.flush().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut uri = String::new();
    stdout.read_line(&mut uri).unwrap();
    let secret = uri_secret(uri.trim()).unwrap_or_else(|| {
        let mut err = String::new();
        let _ = child.stderr.take().unwrap().read_to_string(&mut err);
        panic!("no URI: {uri:?} {err}")
    });
    writeln!(stdin, "{}", oathtool(&secret, steps).unwrap()).unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    secret
}
