//! `twofold setup`: enroll the caller. The daemon offers a secret, the user
//! proves their app has it by typing a code, and only then is it stored.

use std::io::{self, IsTerminal, Write};
use std::path::PathBuf;

use anyhow::bail;
use twofold_protocol::{
    EnrollmentOffer, Methods, SELF_SERVICE, SecretString, TwofoldError, TwofoldProxy, VerifyOutcome,
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
    // Offer only what the rule accepts and the host provides, before the
    // user types anything.
    let (offered, host) = bus::with_daemon(async |proxy| {
        proxy
            .status()
            .await
            .map(|s| (s.setup_methods, s.host_methods))
            .map_err(bus::daemon_error)
    })?;
    let requested = if args.name.is_some() {
        // Another app: an authenticator app by definition.
        if args.method == Some(Method::Email) {
            bail!("--name adds an authenticator app; it does not go with --method email");
        }
        Some(Method::Totp)
    } else {
        args.method
    };
    let method = match pick(
        requested,
        args.address.is_some(),
        offered,
        host,
        interactive,
    )? {
        Some(method) => method,
        None => choose()?,
    };
    if method == Method::Email {
        return run_email(args.address, file, interactive);
    }
    let name = args.name;
    let backup_codes = bus::with_daemon(async |proxy| {
        prove_if_enrolled(proxy).await?;
        let offer = match &name {
            Some(name) => proxy.begin_authenticator(name).await,
            None => proxy.begin_enrollment().await,
        }
        .map_err(bus::daemon_error)?;
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

/// The method to set up from what was asked, what is `offered` (the rule's
/// methods this host provides) and what the `host` provides; `None`: ask the
/// user (a terminal, both offered, nothing asked). A method the host lacks is
/// refused before anything is typed; one the rule does not accept today is
/// set up when asked for by name, with a note (a rule may change its methods
/// on a date).
fn pick(
    requested: Option<Method>,
    address_given: bool,
    offered: Methods,
    host: Methods,
    interactive: bool,
) -> anyhow::Result<Option<Method>> {
    let requested = requested.or(address_given.then_some(Method::Email));
    match requested {
        Some(Method::Email) if !host.email => bail!(
            "codes by e-mail are not available on this host (e-mail is off here); nothing was \
changed. Run `twofold setup --method totp` to use an authenticator app."
        ),
        Some(method) => {
            let accepted = match method {
                Method::Totp => offered.totp,
                Method::Email => offered.email,
            };
            if !accepted {
                eprintln!(
                    "Note: your account's rule does not accept {} today; logins will also ask \
for {}.",
                    method_words(method),
                    if offered.email {
                        "codes sent by e-mail"
                    } else {
                        "codes from an authenticator app"
                    }
                );
            }
            Ok(Some(method))
        }
        None if offered.totp && offered.email && interactive => Ok(None),
        None if offered.totp => Ok(Some(Method::Totp)),
        None if offered.email => Ok(Some(Method::Email)),
        None => bail!(
            "your account's rule accepts no kind of code this host provides; nothing was \
changed. Ask your administrator."
        ),
    }
}

fn method_words(method: Method) -> &'static str {
    match method {
        Method::Totp => "codes from an authenticator app",
        Method::Email => "codes sent by e-mail",
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
            // In explicit colours where the terminal takes them, so the code
            // scans on light and dark backgrounds alike.
            if colours_wanted(|name| std::env::var_os(name)) {
                writeln!(out, "{}", twofold_protocol::text::qr_in_colour(qr))?;
            } else {
                writeln!(out, "{qr}\n")?;
            }
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

/// Whether to colour the QR code (called only on a terminal): not when
/// `NO_COLOR` is set (no-color.org) or the terminal is `dumb` or unknown.
fn colours_wanted(var: impl Fn(&str) -> Option<std::ffi::OsString>) -> bool {
    let term = var("TERM").unwrap_or_default();
    var("NO_COLOR").is_none_or(|v| v.is_empty()) && !term.is_empty() && term != "dumb"
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
    use twofold_protocol::Methods as M;

    #[test]
    fn only_what_is_offered_is_set_up() {
        let both = M::ANY;
        let app = M {
            totp: true,
            email: false,
        };
        let mail = M {
            totp: false,
            email: true,
        };
        // Asked on a terminal only when both are offered.
        assert_eq!(pick(None, false, both, both, true).unwrap(), None);
        assert_eq!(
            pick(None, false, app, both, true).unwrap(),
            Some(Method::Totp)
        );
        assert_eq!(
            pick(None, false, mail, both, true).unwrap(),
            Some(Method::Email)
        );
        assert_eq!(
            pick(None, false, both, both, false).unwrap(),
            Some(Method::Totp)
        );
        assert_eq!(
            pick(None, true, both, both, false).unwrap(),
            Some(Method::Email)
        );
        // E-mail off on the host: refused before any address is asked, with
        // what to do instead.
        let e = pick(Some(Method::Email), false, app, app, true).unwrap_err();
        assert!(e.to_string().contains("--method totp"), "{e}");
        assert!(pick(None, true, app, app, false).is_err());
        // Named, a method the rule does not accept today is set up.
        assert_eq!(
            pick(Some(Method::Totp), false, mail, both, false).unwrap(),
            Some(Method::Totp)
        );
        assert!(pick(None, false, M::NONE, app, true).is_err());
    }

    #[test]
    fn colours_only_where_the_terminal_takes_them() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| std::ffi::OsString::from(v))
            }
        };
        assert!(colours_wanted(env(&[("TERM", "xterm-256color")])));
        assert!(!colours_wanted(env(&[("TERM", "dumb")])));
        assert!(!colours_wanted(env(&[])));
        assert!(!colours_wanted(env(&[
            ("TERM", "xterm"),
            ("NO_COLOR", "1")
        ])));
        assert!(colours_wanted(env(&[("TERM", "xterm"), ("NO_COLOR", "")])));
    }

    #[test]
    fn shows_the_daemons_qr_code_as_it_is() {
        let qr = SecretString::new("\u{2588}\u{2580} \n \u{2584}\u{2588}\n\n".into());
        assert_eq!(qr_lines(&qr), Some("\u{2588}\u{2580} \n \u{2584}\u{2588}"));
        assert_eq!(qr_lines(&SecretString::new(String::new())), None);
        assert_eq!(qr_lines(&SecretString::new("\n".into())), None);
    }
}
