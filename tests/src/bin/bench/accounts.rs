//! Synthetic accounts and enrollments seeded through the daemon's own store.

use super::*;

/// Synthetic users `tfb0..` (uid 40000..) and a group for every tenth of
/// them, in nss_wrapper files for twofoldd.
pub(crate) fn synthetic_accounts(
    dir: &std::path::Path,
    users: usize,
) -> Result<[(String, String); 3]> {
    let passwd = dir.join("passwd");
    let group = dir.join("group");
    let mut pw = String::from("root:x:0:0:root:/root:/bin/sh\n");
    let mut gr = String::from("root:x:0:\n");
    let mut admins = Vec::new();
    for i in 0..users {
        writeln!(
            pw,
            "tfb{i}:x:{}:{}:bench:/nonexistent:/usr/sbin/nologin",
            40_000 + i,
            40_000 + i
        )?;
        writeln!(gr, "tfb{i}:x:{}:", 40_000 + i)?;
        if i % 10 == 0 {
            admins.push(format!("tfb{i}"));
        }
    }
    writeln!(gr, "tfb-admins:x:39999:{}", admins.join(","))?;
    std::fs::write(&passwd, pw)?;
    std::fs::write(&group, gr)?;
    Ok([
        ("LD_PRELOAD".into(), NSS_WRAPPER.into()),
        (
            "NSS_WRAPPER_PASSWD".into(),
            passwd.to_str().context("path")?.into(),
        ),
        (
            "NSS_WRAPPER_GROUP".into(),
            group.to_str().context("path")?.into(),
        ),
    ])
}

pub(crate) fn seed(store: &dyn Store, user: &str, generation: u64) -> Result<Vec<u8>> {
    Ok(seed_with_backup(store, user, generation, 1)?.0)
}

/// An enrollment written through the daemon's own store, with `backup_codes`
/// backup codes hashed with cheap, benchmark-only parameters (seeding
/// thousands of users with the real ones would take minutes).
pub(crate) fn seed_with_backup(
    store: &dyn Store,
    user: &str,
    generation: u64,
    backup_codes: u32,
) -> Result<(Vec<u8>, Vec<String>)> {
    let secret: Vec<u8> = rand::random::<[u8; 20]>().to_vec();
    let cheap = HashParams {
        m_cost_kib: 64,
        t_cost: 1,
        p_cost: 1,
    };
    let (plain, backup) = backup::generate(backup_codes, cheap)?;
    let enrollment = Enrollment::new(
        generation,
        Some(SecretBytes(secret.clone())),
        (6, 30),
        backup,
        unix_now(),
    );
    store.write_enrollment(user, None, &enrollment)?;
    Ok((
        secret,
        plain.iter().map(|c| c.expose().to_string()).collect(),
    ))
}

/// Takes the next `n` unused accounts.
pub(crate) struct Accounts(pub(crate) std::ops::Range<usize>);

impl Accounts {
    pub(crate) fn take(&mut self, n: usize) -> Result<Vec<usize>> {
        let start = self.0.start;
        if start + n > self.0.end {
            bail!("the benchmark needs more synthetic accounts");
        }
        self.0.start += n;
        Ok((start..start + n).collect())
    }
}

/// `fill STATE FROM TO`: enrollments for `tfs{FROM}` .. `tfs{TO-1}` (names no
/// account has) written through the daemon's own store, without backup
/// codes. The scale benchmark runs it under eatmydata: a fixture, not state
/// anyone relies on, so its fsyncs are skipped.
pub(crate) fn fill(state: &std::path::Path, from: usize, to: usize) -> Result<()> {
    let store = FileStore::open(state)?;
    for i in from..to {
        seed_with_backup(&store, &format!("tfs{i}"), 1 + i as u64, 0)?;
    }
    Ok(())
}

/// `enroll-as`, run by `memory` as the account's uid: `twofold setup`'s two
/// calls, the code computed from the offered key; prints the microseconds
/// the confirm call took.
pub(crate) fn enroll_as() -> Result<()> {
    use twofold_protocol::TwofoldProxy;
    let micros = zbus::block_on(async {
        let conn = zbus::Connection::system().await?;
        let proxy = TwofoldProxy::new(&conn).await?;
        let offer = proxy.begin_enrollment().await?;
        let secret = totp_rs::Secret::try_from_base32(offer.secret_base32.expose())
            .map_err(|e| anyhow!("the offered key: {e:?}"))?;
        let code = totp::code_at(secret.as_bytes(), SIX, unix_now())?;
        let start = std::time::Instant::now();
        let codes = proxy.confirm_enrollment(&code).await?;
        let micros = start.elapsed().as_micros();
        if codes.len() != 10 {
            bail!("{} backup codes", codes.len());
        }
        anyhow::Ok(micros)
    })?;
    println!("{micros}");
    Ok(())
}
