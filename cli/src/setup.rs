//! `twofold setup`: enroll the caller. The daemon offers a secret, the user
//! proves their app has it by typing a code, and only then is it stored.

use std::io::{self, IsTerminal, Write};
use std::path::PathBuf;

use anyhow::bail;
use twofold_protocol::{EnrollmentOffer, SecretString, TwofoldError, TwofoldProxy};

use crate::{bus, codes, prompt};

/// Codes the user may type before giving up. The daemon forgets the offer
/// after its own limit of wrong codes, whichever comes first.
const MAX_TRIES: u32 = 5;

pub fn run(file: Option<PathBuf>, ascii: bool) -> anyhow::Result<()> {
    let ascii = ascii
        || twofold_protocol::text::locale_is_utf8(|name| std::env::var(name).ok()) == Some(false);
    if let Some(path) = &file {
        codes::ensure_absent(path)?;
    }
    let interactive = io::stdout().is_terminal();
    let backup_codes = bus::with_daemon(async |proxy| {
        let offer = proxy.begin_enrollment().await.map_err(bus::daemon_error)?;
        if interactive {
            show_offer(&offer, ascii)?;
            confirm_interactively(proxy).await
        } else {
            confirm_piped(proxy, &offer).await
        }
    })?;
    if interactive {
        println!("\nTwo-factor authentication is now set up.");
    }
    codes::present(&backup_codes, file, interactive)
}

/// Scripts: the URI on stdout's first line, then one code line on stdin.
async fn confirm_piped(
    proxy: &TwofoldProxy<'_>,
    offer: &EnrollmentOffer,
) -> anyhow::Result<Vec<SecretString>> {
    let mut out = io::stdout().lock();
    writeln!(out, "{}", offer.uri.expose())?;
    out.flush()?;
    drop(out);
    let Some(code) = prompt::ask("Code from your app: ")? else {
        bail!("no code on standard input; nothing was stored");
    };
    proxy
        .confirm_enrollment(code.trim())
        .await
        .map_err(bus::daemon_error)
}

async fn confirm_interactively(proxy: &TwofoldProxy<'_>) -> anyhow::Result<Vec<SecretString>> {
    let mut tries = 0;
    loop {
        tries += 1;
        let Some(code) = prompt::ask("Code from your app: ")? else {
            bail!("no code was entered; nothing was stored. Run `twofold setup` again.");
        };
        match proxy.confirm_enrollment(code.trim()).await {
            Ok(codes) => return Ok(codes),
            Err(TwofoldError::InvalidInput(message)) if tries < MAX_TRIES => {
                eprintln!("{message}");
            }
            Err(e) => return Err(bus::daemon_error(e)),
        }
    }
}

fn show_offer(offer: &EnrollmentOffer, ascii: bool) -> anyhow::Result<()> {
    let key = twofold_protocol::text::group_key(offer.secret_base32.expose());
    let mut out = io::stdout().lock();
    writeln!(out, "Set up two-factor authentication for your logins.\n")?;
    let qr = if ascii {
        &offer.qr_code_ascii
    } else {
        &offer.qr_code
    };
    match qr_lines(qr) {
        Some(qr) => {
            writeln!(out, "Scan this QR code with your authenticator app:\n")?;
            writeln!(out, "{qr}\n")?;
            writeln!(out, "Or enter this key by hand: {}", *key)?;
        }
        None => writeln!(out, "Enter this key in your authenticator app: {}", *key)?,
    }
    writeln!(out, "Key URI: {}\n", offer.uri.expose())?;
    writeln!(
        out,
        "Then type the code your app shows, within {}. Nothing is stored until then.",
        twofold_protocol::text::human_duration(offer.expires_in_secs)
    )?;
    out.flush()?;
    Ok(())
}

/// The QR code the daemon drew (the same one a login shows), without
/// trailing line breaks; `None` if it sent none.
fn qr_lines(qr: &SecretString) -> Option<&str> {
    let lines = qr.expose().trim_end_matches(['\n', '\r']);
    (!lines.trim().is_empty()).then_some(lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shows_the_daemons_qr_code_as_it_is() {
        let qr = SecretString::new("\u{2588}\u{2580} \n \u{2584}\u{2588}\n\n".into());
        assert_eq!(qr_lines(&qr), Some("\u{2588}\u{2580} \n \u{2584}\u{2588}"));
        assert_eq!(qr_lines(&SecretString::new(String::new())), None);
        assert_eq!(qr_lines(&SecretString::new("\n".into())), None);
    }
}
