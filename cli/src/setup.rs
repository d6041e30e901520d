//! `twofold setup`: enroll the caller. The daemon offers a secret, the user
//! proves their app has it by typing a code, and only then is it stored.

use std::io::{self, IsTerminal, Write};
use std::path::PathBuf;

use anyhow::{Context, bail};
use qrcode::QrCode;
use qrcode::render::unicode::Dense1x2;
use twofold_protocol::{EnrollmentOffer, SecretString, TwofoldError, TwofoldProxy};
use zeroize::Zeroizing;

use crate::{bus, codes, prompt};

/// Codes the user may type before giving up. The daemon forgets the offer
/// after its own limit of wrong codes, whichever comes first.
const MAX_TRIES: u32 = 5;

pub fn run(file: Option<PathBuf>) -> anyhow::Result<()> {
    if let Some(path) = &file {
        codes::ensure_absent(path)?;
    }
    let interactive = io::stdout().is_terminal();
    let backup_codes = bus::with_daemon(async |proxy| {
        let offer = proxy.begin_enrollment().await.map_err(bus::daemon_error)?;
        if interactive {
            show_offer(&offer)?;
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

fn show_offer(offer: &EnrollmentOffer) -> anyhow::Result<()> {
    let qr = render_qr(&offer.uri)?;
    let key = group_key(offer.secret_base32.expose());
    let mut out = io::stdout().lock();
    writeln!(
        out,
        "Set up two-factor authentication for your logins.\n\n\
         Scan this QR code with your authenticator app:\n"
    )?;
    writeln!(out, "{}\n", *qr)?;
    writeln!(out, "Or enter this key by hand: {}", *key)?;
    writeln!(out, "Key URI: {}\n", offer.uri.expose())?;
    writeln!(
        out,
        "Then type the code your app shows, within {}. Nothing is stored until then.",
        twofold_protocol::text::human_duration(offer.expires_in_secs)
    )?;
    out.flush()?;
    Ok(())
}

/// The URI as a QR code of half-block characters. Dark modules are drawn as
/// blanks and light ones as blocks, so the code reads the right way round on
/// the usual light-on-dark terminal, with a light quiet zone around it.
fn render_qr(uri: &SecretString) -> anyhow::Result<Zeroizing<String>> {
    let code = QrCode::new(uri.expose().as_bytes()).context("cannot draw the QR code")?;
    Ok(Zeroizing::new(
        code.render::<Dense1x2>()
            .dark_color(Dense1x2::Light)
            .light_color(Dense1x2::Dark)
            .quiet_zone(true)
            .build(),
    ))
}

/// A base32 key in blocks of four, easier to copy by hand.
fn group_key(key: &str) -> Zeroizing<String> {
    let mut grouped = Zeroizing::new(String::with_capacity(key.len() + key.len() / 4));
    for (i, c) in key.chars().filter(|c| !c.is_whitespace()).enumerate() {
        if i > 0 && i % 4 == 0 {
            grouped.push(' ');
        }
        grouped.push(c);
    }
    grouped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_the_key_in_fours() {
        assert_eq!(
            group_key("JBSWY3DPEHPK3PXP").as_str(),
            "JBSW Y3DP EHPK 3PXP"
        );
        assert_eq!(group_key("ABCDEF").as_str(), "ABCD EF");
        assert_eq!(group_key("ABCD").as_str(), "ABCD");
        assert_eq!(group_key("").as_str(), "");
    }

    #[test]
    fn qr_code_has_a_light_quiet_zone() {
        let uri = SecretString::new("otpauth://totp/twofold:alice?secret=JBSWY3DPEHPK3PXP".into());
        let qr = render_qr(&uri).unwrap();
        let first = qr.lines().next().unwrap();
        // The top rows are quiet zone: light, so full blocks.
        assert!(!first.is_empty());
        assert!(first.chars().all(|c| c == '\u{2588}'), "{first:?}");
        // Dark modules (the finder patterns) show as background.
        assert!(qr.contains(' ') || qr.contains('\u{2580}') || qr.contains('\u{2584}'));
    }
}
