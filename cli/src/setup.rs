//! `twofold setup`: enroll the caller. The daemon offers a secret, the user
//! proves their app has it by typing a code, and only then is it stored.

use std::io::{self, IsTerminal, Write};
use std::path::PathBuf;

use anyhow::bail;
use twofold_protocol::{
    EnrollmentOffer, SELF_SERVICE, SecretString, TwofoldError, TwofoldProxy, VerifyOutcome,
};

use crate::{bus, codes, prompt};
use twofold_cli::args::{Method, SetupArgs};

/// Codes the user may type before giving up. The daemon forgets the offer
/// after its own limit of wrong codes, whichever comes first.
const MAX_TRIES: u32 = 5;

pub fn run(args: SetupArgs) -> anyhow::Result<()> {
    let file = args.file.backup_codes_file;
    let ascii = args.ascii
        || twofold_protocol::text::locale_is_utf8(|name| std::env::var(name).ok()) == Some(false);
    if let Some(path) = &file {
        codes::ensure_absent(path)?;
    }
    let interactive = io::stdout().is_terminal();
    let method = match args.method {
        Some(method) => method,
        None if interactive && args.address.is_none() => choose()?,
        None if args.address.is_some() => Method::Email,
        None => Method::Totp,
    };
    if method == Method::Email {
        return run_email(args.address, file, interactive);
    }
    let backup_codes = bus::with_daemon(async |proxy| {
        prove_if_enrolled(proxy).await?;
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
    if backup_codes.is_empty() {
        // The app joined an e-mail enrollment, whose backup codes stay.
        if interactive {
            println!("Your backup codes are unchanged.");
        }
        return Ok(());
    }
    codes::present(&backup_codes, file, interactive)
}

/// A second method is added only after a current code from the first (or a
/// backup code): a session running as the user must not be enough.
async fn prove_if_enrolled(proxy: &TwofoldProxy<'_>) -> anyhow::Result<()> {
    let status = proxy.status().await.map_err(bus::daemon_error)?;
    if !status.enrolled {
        return Ok(());
    }
    let Some(code) = prompt::current_code(proxy).await? else {
        bail!("no code was entered; nothing was changed");
    };
    let reply = proxy
        .verify(&status.user, code.trim(), SELF_SERVICE, "")
        .await
        .map_err(bus::daemon_error)?;
    if reply.outcome.is_accepted() || reply.outcome == VerifyOutcome::MustEnroll {
        Ok(())
    } else if reply.message.is_empty() {
        bail!("that code was not accepted; nothing was changed")
    } else {
        bail!("{}", reply.message)
    }
}

fn choose() -> anyhow::Result<Method> {
    for _ in 0..MAX_TRIES {
        let Some(answer) =
            prompt::ask("Set up (1) an authenticator app or (2) codes sent by e-mail? [1]: ")?
        else {
            bail!("no answer; nothing was stored");
        };
        match answer.trim() {
            "" | "1" => return Ok(Method::Totp),
            "2" => return Ok(Method::Email),
            _ => eprintln!("Type 1 or 2."),
        }
    }
    bail!("no choice was made; nothing was stored")
}

/// E-mail codes: the daemon sends a code to the address, the user types it
/// back, and only then is the address stored. Piped, the code is one line
/// on stdin and the backup codes (if this is the first method) go to stdout.
fn run_email(
    address: Option<String>,
    file: Option<PathBuf>,
    interactive: bool,
) -> anyhow::Result<()> {
    let address = match address {
        Some(a) => a,
        None => match prompt::ask("E-mail address for your login codes: ")? {
            Some(a) => a.trim().to_string(),
            None => bail!("no address was given; nothing was stored"),
        },
    };
    let backup_codes = bus::with_daemon(async |proxy| {
        prove_if_enrolled(proxy).await?;
        let masked = proxy
            .begin_email_enrollment(&address)
            .await
            .map_err(bus::daemon_error)?;
        let question = format!("Code sent by e-mail to {masked}: ");
        let mut tries = 0;
        loop {
            tries += 1;
            let Some(code) = prompt::ask(&question)? else {
                bail!(
                    "no code was entered; nothing was stored. Run `twofold setup --method email` again."
                );
            };
            match proxy.confirm_email_enrollment(code.trim()).await {
                Ok(codes) => return Ok(codes),
                Err(TwofoldError::InvalidInput(message)) if interactive && tries < MAX_TRIES => {
                    eprintln!("{message}");
                }
                Err(e) => return Err(bus::daemon_error(e)),
            }
        }
    })?;
    if interactive {
        println!("\nLogin codes will now be sent to your e-mail.");
    }
    if backup_codes.is_empty() {
        if interactive {
            println!("Your backup codes are unchanged.");
        }
        return Ok(());
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
