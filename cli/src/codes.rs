//! Backup codes: `twofold backup-codes`, and showing and saving a new set
//! (shared with `twofold setup`).

use std::fs::OpenOptions;
use std::io::{self, IsTerminal, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use twofold_protocol::code::display_backup;

use anyhow::{Context, bail};
use twofold_protocol::SecretString;
use zeroize::Zeroizing;

use crate::{bus, prompt};

/// `twofold backup-codes`: a current code in (from the app, or e-mailed now
/// to a user with e-mail codes only), a new set of codes out.
pub fn regenerate(file: Option<PathBuf>) -> anyhow::Result<()> {
    if let Some(path) = &file {
        ensure_absent(path)?;
    }
    let codes = bus::with_daemon(async |proxy| {
        let Some(code) = prompt::current_code(proxy).await? else {
            bail!("no code was entered; your backup codes are unchanged");
        };
        proxy
            .regenerate_backup_codes(code.trim())
            .await
            .map_err(bus::daemon_error)
    })?;
    present(&codes, file, io::stdout().is_terminal())
}

/// Show the codes (and save them if asked). Off a terminal: one code a line
/// on stdout and nothing else, for scripts.
pub fn present(
    codes: &[SecretString],
    file: Option<PathBuf>,
    interactive: bool,
) -> anyhow::Result<()> {
    if !interactive {
        let mut out = io::stdout().lock();
        for code in codes {
            writeln!(out, "{}", *display_backup(code.expose()))?;
        }
        out.flush()?;
        if let Some(path) = file {
            write_file(&path, codes).context(
                "the new backup codes are active and were printed on stdout, but were not saved",
            )?;
        }
        return Ok(());
    }

    let mut out = io::stdout().lock();
    writeln!(
        out,
        "\nYour backup codes. Each works once, in place of a code from your app or\n\
         your e-mail, if you lose access to them. They are shown only now; keep them\n\
         somewhere safe.\n"
    )?;
    for (i, code) in codes.iter().enumerate() {
        writeln!(out, "  {:>2}. {}", i + 1, *display_backup(code.expose()))?;
    }
    writeln!(out)?;
    drop(out);
    save_interactively(codes, file)?;
    confirm_saved()
}

/// Write to `file`, or to a path the user types; ask again when that fails.
fn save_interactively(codes: &[SecretString], file: Option<PathBuf>) -> anyhow::Result<()> {
    let mut next = file;
    loop {
        let path = match next.take() {
            Some(path) => path,
            None => {
                match prompt::ask("Save them to a file? Type a path, or press Enter to skip: ")? {
                    Some(line) if !line.trim().is_empty() => expand_home(line.trim()),
                    _ => return Ok(()),
                }
            }
        };
        match write_file(&path, codes) {
            Ok(()) => {
                println!("Saved to {} (readable only by you).", path.display());
                return Ok(());
            }
            Err(e) => eprintln!("{e:#}"),
        }
    }
}

fn confirm_saved() -> anyhow::Result<()> {
    loop {
        match prompt::ask("Type \"yes\" once you have saved the codes: ")? {
            Some(line) if line.trim().eq_ignore_ascii_case("yes") => return Ok(()),
            Some(_) => {}
            None => {
                eprintln!(
                    "\nwarning: the backup codes above are active but were not confirmed as saved. \
                     If you lost them, run `twofold backup-codes` for a new set."
                );
                return Ok(());
            }
        }
    }
}

/// Refuse early, before the daemon is asked, a path that would be refused later.
pub fn ensure_absent(path: &Path) -> anyhow::Result<()> {
    if path.symlink_metadata().is_ok() {
        bail!(
            "{} already exists; choose a new file for the backup codes (twofold never overwrites one)",
            path.display()
        );
    }
    Ok(())
}

/// Write the codes, one a line, to a new file only its owner can read.
/// Never overwrites and never follows a symlink, so a planted link cannot
/// redirect the codes.
pub fn write_file(path: &Path, codes: &[SecretString]) -> anyhow::Result<()> {
    let mut text = Zeroizing::new(String::new());
    for code in codes {
        text.push_str(&display_backup(code.expose()));
        text.push('\n');
    }
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| match e.kind() {
            io::ErrorKind::AlreadyExists => anyhow::anyhow!(
                "{} already exists; choose a new file (twofold never overwrites one)",
                path.display()
            ),
            _ => anyhow::Error::new(e).context(format!("cannot create {}", path.display())),
        })?;
    if let Err(e) = file
        .write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
    {
        // A partial list would be mistaken for the whole one.
        drop(file);
        let _ = std::fs::remove_file(path);
        return Err(anyhow::Error::new(e).context(format!("cannot write {}", path.display())));
    }
    Ok(())
}

/// `~/x` as typed at the prompt means the home directory, as in a shell.
fn expand_home(typed: &str) -> PathBuf {
    match (typed.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => Path::new(&home).join(rest),
        _ => PathBuf::from(typed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn codes() -> Vec<SecretString> {
        vec![
            SecretString::new("abcdefghjk".into()),
            SecretString::new("0123456789".into()),
        ]
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("twofold-cli-test-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn writes_a_private_file() {
        let dir = temp_dir("private");
        let path = dir.join("codes.txt");
        write_file(&path, &codes()).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "abcde-fghjk\n01234-56789\n"
        );
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn refuses_to_overwrite_a_file() {
        let dir = temp_dir("exists");
        let path = dir.join("codes.txt");
        std::fs::write(&path, "keep me").unwrap();
        let e = write_file(&path, &codes()).unwrap_err();
        assert!(format!("{e:#}").contains("already exists"), "{e:#}");
        assert!(ensure_absent(&path).is_err());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "keep me");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn refuses_a_symlink() {
        let dir = temp_dir("symlink");
        let target = dir.join("target");
        let link = dir.join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        // A dangling link: following it would create `target`.
        assert!(write_file(&link, &codes()).is_err());
        assert!(ensure_absent(&link).is_err());
        assert!(!target.exists());
        // A link to an existing file: following it would overwrite the file.
        std::fs::write(&target, "keep me").unwrap();
        assert!(write_file(&link, &codes()).is_err());
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep me");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn ensure_absent_accepts_a_new_path() {
        let dir = temp_dir("absent");
        assert!(ensure_absent(&dir.join("new")).is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn expands_a_leading_tilde_only() {
        if let Some(home) = std::env::var_os("HOME") {
            assert_eq!(expand_home("~/codes"), Path::new(&home).join("codes"));
        }
        assert_eq!(expand_home("/tmp/~/x"), PathBuf::from("/tmp/~/x"));
        assert_eq!(expand_home("codes"), PathBuf::from("codes"));
    }
}
