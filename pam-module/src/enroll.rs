//! Enrollment inside the login conversation (`LoginAction::Enroll`): a user
//! whose rule requires a second factor and who has none yet is shown a fresh
//! key, types the code their app computes from it, and gets backup codes.
//!
//! This never returns PAM_SUCCESS. Enrolling proves that whoever is at the
//! keyboard holds the phone they just paired, not that they are the user: the
//! first factor in the stack must decide. With `auth sufficient
//! pam_twofold.so`, SUCCESS here would let in anyone who knows the name of a
//! user who has not enrolled yet. The daemon stores nothing unless a code is
//! confirmed, so every way out before that leaves the user not enrolled.

use crate::args::QrStyle;
use crate::daemon::Daemon;
use crate::host::{Host, Priority, Shown};
use crate::steps::{PROMPT, no_answer, refused_by};
use pam::constants::PamResultCode;
use twofold_protocol::code::{self, Code, CodeError};
use twofold_protocol::{
    EnrollmentOffer, Login, LoginPlan, Method, SecretString, TwofoldError, user,
};
use zeroize::Zeroizing;

/// Asked after the backup codes, so that they are shown with a prompt.
pub const SAVED_PROMPT: &str = "Press Enter once you have written them down: ";

/// Answers looked at before giving up, malformed ones included (as `twofold
/// setup` allows): enough for a typo or a code that changed while typing.
/// The answer that redraws the QR code in ASCII is not counted.
const MAX_TRIES: u32 = 3;

const NOT_A_TOTP_CODE: &str =
    "That is not a code from your authenticator app. Type the digits it shows for this account.";
const GIVE_UP: &str = "Nothing was stored: two-factor authentication is not set up. \
Log in again to start over with a new key.";
const NO_MESSAGES: &str = "Two-factor authentication must be set up before you can log in, \
but this program asked for no messages, so the key cannot be shown. \
Log in another way (for example over SSH) to set it up.";
/// Shown under the Unicode QR code: the answer that redraws it in ASCII.
/// The other answer draws it dark on light, for a light background (escape
/// colours cannot be used: SSH clients show them as text).
const ASCII_HINT: &str = "QR code garbled? Type A at the prompt for a plain-text one. \
Light background? Type I for one drawn dark on light.";
const SET_UP: &str = "Two-factor authentication is now set up.";
const BACKUP_CODES_INTRO: &str = "Your backup codes, for when you do not have your phone:";
const KEEP_BACKUP_CODES: &str =
    "Each backup code works once. They are shown only now: write them down.";

/// Asked when the user may choose how to enroll.
pub const CHOICE_PROMPT: &str =
    "Set up (1) an authenticator app or (2) codes sent by e-mail? Type 1 or 2: ";
pub const ADDRESS_PROMPT: &str = "E-mail address for your login codes: ";
/// Shown above the QR code when the user chose the app among other methods.
const APP_INSTRUCTIONS: &str = "Scan the QR code below with an authenticator app (Google Authenticator, \
Microsoft Authenticator, or a password manager), or enter the key by hand, then type the code it shows.";

/// Run the enrollment `plan` (the daemon's answer to `BeginLogin`) offers.
pub fn enroll<H: Host, D: Daemon>(
    host: &mut H,
    daemon: &D,
    login: &Login,
    plan: &LoginPlan,
    qr: QrStyle,
) -> PamResultCode {
    // Under PAM_SILENT (sudo's default) the key would be dropped and the user
    // asked for a code they have no way to compute: say so instead, and do
    // not even make the daemon draw a key.
    if !host.shows_info() {
        host.show(Shown::Error, NO_MESSAGES);
        return PamResultCode::PAM_AUTH_ERR;
    }
    let offers = |m: Method| plan.methods.contains(&m);
    let (app, email) = (offers(Method::Totp), offers(Method::Email));
    let by_email = match (app, email) {
        (true, true) => {
            host.show(Shown::Info, &plan.message);
            let mut chosen = None;
            for _ in 0..MAX_TRIES {
                let answer = match host.prompt_visible(CHOICE_PROMPT) {
                    Ok(answer) => answer,
                    Err(e) => return no_answer(host, "at the choice of method", login, e),
                };
                match answer.trim_ascii() {
                    b"1" => chosen = Some(false),
                    b"2" => chosen = Some(true),
                    _ => {
                        host.show(
                            Shown::Error,
                            "Type 1 for an authenticator app or 2 for e-mail.",
                        );
                        continue;
                    }
                }
                break;
            }
            match chosen {
                Some(choice) => choice,
                None => {
                    host.show(Shown::Error, GIVE_UP);
                    return PamResultCode::PAM_AUTH_ERR;
                }
            }
        }
        (false, true) => true,
        _ => false,
    };
    if by_email {
        let explanation = if app { "" } else { plan.message.as_str() };
        return enroll_email(host, daemon, login, explanation);
    }
    let explanation = if email || plan.message.is_empty() {
        APP_INSTRUCTIONS
    } else {
        plan.message.as_str()
    };
    let offer = match daemon.enroll_at_login(login) {
        Ok(offer) => offer,
        Err(e) => return refused_by(host, e),
    };
    let ascii = match qr {
        QrStyle::Ascii => true,
        QrStyle::Unicode => false,
        QrStyle::Auto => host.locale_is_utf8() == Some(false),
    };
    // One message, right before the prompt: OpenSSH shows PAM info messages
    // only together with the next prompt.
    host.show(Shown::Info, &offer_text(explanation, &offer, ascii));
    // Kept (with the key in it) only while a redraw in ASCII may be asked for.
    let mut redraw = (!ascii).then_some(offer);
    let mut inverted_shown = false;
    let mut attempt = 0;
    while attempt < MAX_TRIES {
        let answer = match host.prompt_hidden(PROMPT) {
            Ok(answer) => answer,
            Err(e) => {
                return no_answer(host, "during enrollment (nothing stored)", login, e);
            }
        };
        // Under sshd the client's character set is unknown: the user asks
        // for ASCII when the Unicode drawing comes out garbled. Once.
        if answer.trim_ascii().eq_ignore_ascii_case(b"a")
            && let Some(offer) = redraw.take()
        {
            host.show(Shown::Info, &offer_text("", &offer, true));
            continue;
        }
        // A light background shows the Unicode drawing inverted. Once.
        if answer.trim_ascii().eq_ignore_ascii_case(b"i")
            && !inverted_shown
            && let Some(offer) = redraw.as_ref()
        {
            inverted_shown = true;
            host.show(Shown::Info, &inverted_text(offer));
            continue;
        }
        attempt += 1;
        let parsed = code::parse(&answer);
        drop(answer);
        // Only a TOTP code can confirm a new key; anything else is not sent,
        // and only a short error is shown before the next prompt (not the
        // key again: the user has it in their app or on screen already).
        let problem = match parsed {
            Ok(Code::Totp(code)) => match daemon.confirm_at_login(login, &code) {
                Ok(backup_codes) => {
                    drop(redraw);
                    return enrolled(host, &backup_codes);
                }
                // The daemon's "code does not match": a typo or a late code.
                Err(TwofoldError::InvalidInput(message)) => message,
                // Expired offer, throttled, lost connection...: no second chance.
                Err(e) => return refused_by(host, e),
            },
            Ok(Code::Backup(_)) | Err(CodeError::Malformed | CodeError::NotUtf8) => {
                NOT_A_TOTP_CODE.to_owned()
            }
            Err(e @ (CodeError::Empty | CodeError::TooLong)) => e.user_message().to_owned(),
        };
        if attempt < MAX_TRIES {
            host.show(Shown::Error, &problem);
        } else {
            host.show(Shown::Error, &format!("{problem}\n{GIVE_UP}"));
        }
    }
    host.log(
        Priority::Warning,
        &format!(
            "{} did not confirm the enrollment at login after {MAX_TRIES} tries; nothing stored",
            user::loggable(login.user.as_bytes())
        ),
    );
    PamResultCode::PAM_AUTH_ERR
}

/// Stored: show the backup codes and leave the decision to the stack.
fn enrolled<H: Host>(host: &mut H, backup_codes: &[SecretString]) -> PamResultCode {
    // The codes travel inside a prompt: OpenSSH shows info messages only
    // with the next prompt, and otherwise logs them (at debug level) and
    // sends them as a banner that some clients hide. Whatever the answer,
    // the enrollment is stored.
    let text = if backup_codes.is_empty() {
        Zeroizing::new(format!("{SET_UP}\n\nPress Enter to continue: "))
    } else {
        Zeroizing::new(format!(
            "{}\n\n{SAVED_PROMPT}",
            backup_codes_text(backup_codes).as_str()
        ))
    };
    if host.prompt_hidden(&text).is_err() {
        // The user may not have seen the backup codes (`twofold
        // backup-codes` makes a new set): worth a line for the admin.
        host.log(
            Priority::Warning,
            "the conversation ended before the backup codes were acknowledged; the enrollment is stored",
        );
    }
    // Not SUCCESS: a new phone or mailbox is no proof of identity (see above).
    host.log(
        Priority::Debug,
        "enrolled at login; PAM_IGNORE leaves the decision to the rest of the stack",
    );
    PamResultCode::PAM_IGNORE
}

/// Register an e-mail address inside the login: the address, then the code
/// the daemon sent there. Nothing is stored unless the code comes back.
fn enroll_email<H: Host, D: Daemon>(
    host: &mut H,
    daemon: &D,
    login: &Login,
    explanation: &str,
) -> PamResultCode {
    host.show(Shown::Info, explanation);
    let mut masked = None;
    for _ in 0..MAX_TRIES {
        let answer = match host.prompt_visible(ADDRESS_PROMPT) {
            Ok(answer) => answer,
            Err(e) => return no_answer(host, "at the e-mail address prompt", login, e),
        };
        let Ok(address) = std::str::from_utf8(&answer) else {
            host.show(Shown::Error, "That is not an e-mail address.");
            continue;
        };
        match daemon.email_enroll_at_login(login, address.trim()) {
            Ok(m) => {
                masked = Some(m);
                break;
            }
            Err(TwofoldError::InvalidInput(message)) => host.show(Shown::Error, &message),
            Err(e) => return refused_by(host, e),
        }
    }
    let Some(masked) = masked else {
        host.show(Shown::Error, GIVE_UP);
        return PamResultCode::PAM_AUTH_ERR;
    };
    let prompt = format!("Code sent by e-mail to {masked}: ");
    for attempt in 1..=MAX_TRIES {
        let answer = match host.prompt_hidden(&prompt) {
            Ok(answer) => answer,
            Err(e) => {
                return no_answer(host, "during e-mail enrollment (nothing stored)", login, e);
            }
        };
        let problem = match code::parse(&answer) {
            Ok(Code::Totp(code)) => match daemon.confirm_email_at_login(login, &code) {
                Ok(backup_codes) => return enrolled(host, &backup_codes),
                Err(TwofoldError::InvalidInput(message)) => message,
                Err(e) => return refused_by(host, e),
            },
            Ok(Code::Backup(_)) | Err(CodeError::Malformed | CodeError::NotUtf8) => {
                "Type the 6 digits from the e-mail.".to_owned()
            }
            Err(e @ (CodeError::Empty | CodeError::TooLong)) => e.user_message().to_owned(),
        };
        if attempt < MAX_TRIES {
            host.show(Shown::Error, &problem);
        } else {
            host.show(Shown::Error, &format!("{problem}\n{GIVE_UP}"));
        }
    }
    PamResultCode::PAM_AUTH_ERR
}

/// The daemon's explanation, the QR code (Unicode, with the hint that
/// redraws it, or ASCII), the Key URI and the key by hand.
fn offer_text(explanation: &str, offer: &EnrollmentOffer, ascii: bool) -> Zeroizing<String> {
    let key = twofold_protocol::text::group_key(offer.secret_base32.expose());
    let qr = if ascii {
        &offer.qr_code_ascii
    } else {
        &offer.qr_code
    };
    let mut pieces = Vec::with_capacity(9);
    if !explanation.is_empty() {
        pieces.extend([explanation, "\n\n"]);
    }
    pieces.extend([
        qr.expose().trim_end_matches('\n'),
        "\n\nKey URI: ",
        offer.uri.expose(),
        "\nOr enter this key by hand: ",
        &key,
    ]);
    if !ascii {
        pieces.extend(["\n", ASCII_HINT]);
    }
    concat(&pieces)
}

/// The Unicode QR code drawn dark on light, and the key by hand.
fn inverted_text(offer: &EnrollmentOffer) -> Zeroizing<String> {
    let key = twofold_protocol::text::group_key(offer.secret_base32.expose());
    let drawing = Zeroizing::new(twofold_protocol::text::qr_inverted(offer.qr_code.expose()));
    concat(&[
        drawing.trim_end_matches('\n'),
        "\n\nOr enter this key by hand: ",
        &key,
    ])
}

/// The confirmation, then the backup codes numbered from 1, as `xxxxx-xxxxx`.
fn backup_codes_text(codes: &[SecretString]) -> Zeroizing<String> {
    let width = codes.len().to_string().len();
    let numbers: Vec<String> = (1..=codes.len())
        .map(|n| format!("\n{n:>width$}. "))
        .collect();
    let shown: Vec<Zeroizing<String>> = codes
        .iter()
        .map(|c| code::display_backup(c.expose()))
        .collect();
    let mut pieces = vec![SET_UP, "\n\n", BACKUP_CODES_INTRO];
    for (number, code) in numbers.iter().zip(&shown) {
        pieces.push(number);
        pieces.push(code);
    }
    pieces.extend(["\n\n", KEEP_BACKUP_CODES]);
    concat(&pieces)
}

/// Join in one allocation, so no copy of a secret is left behind in memory
/// freed by a growing string.
fn concat(pieces: &[&str]) -> Zeroizing<String> {
    let mut text = Zeroizing::new(String::with_capacity(pieces.iter().map(|p| p.len()).sum()));
    for piece in pieces {
        text.push_str(piece);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer() -> EnrollmentOffer {
        EnrollmentOffer {
            qr_code: SecretString::new("█▀▀█\n█▄▄█\n".into()),
            qr_code_ascii: SecretString::new("##  ##\n  ##  \n".into()),
            uri: SecretString::new("otpauth://totp/twofold:alice?secret=JBSWY3DPEHPK3PXP".into()),
            secret_base32: SecretString::new("JBSWY3DPEHPK3PXP".into()),
            expires_in_secs: 600,
        }
    }

    #[test]
    fn the_offer_is_one_text_in_order() {
        assert_eq!(
            offer_text("Set it up now.", &offer(), false).as_str(),
            "Set it up now.\n\n█▀▀█\n█▄▄█\n\n\
             Key URI: otpauth://totp/twofold:alice?secret=JBSWY3DPEHPK3PXP\n\
             Or enter this key by hand: JBSW Y3DP EHPK 3PXP\n\
             QR code garbled? Type A at the prompt for a plain-text one. \
             Light background? Type I for one drawn dark on light."
        );
        // Drawn the other way round, for a light background.
        assert_eq!(
            inverted_text(&offer()).as_str(),
            "\u{20}\u{2584}\u{2584}\u{20}\n\u{20}\u{2580}\u{2580}\u{20}\n\n\
             Or enter this key by hand: JBSW Y3DP EHPK 3PXP"
        );
        // No explanation: no leading blank lines.
        assert!(offer_text("", &offer(), false).starts_with("█▀▀█\n"));
        // ASCII: the other drawing, and no hint to switch.
        assert_eq!(
            offer_text("", &offer(), true).as_str(),
            "##  ##\n  ##  \n\n\
             Key URI: otpauth://totp/twofold:alice?secret=JBSWY3DPEHPK3PXP\n\
             Or enter this key by hand: JBSW Y3DP EHPK 3PXP"
        );
    }

    #[test]
    fn backup_codes_are_numbered_and_aligned() {
        let codes: Vec<SecretString> = (0..10)
            .map(|i| SecretString::new(format!("abcdefghj{i}")))
            .collect();
        let text = backup_codes_text(&codes);
        assert!(text.starts_with(SET_UP));
        assert!(text.contains("\n 1. abcde-fghj0\n 2. abcde-fghj1\n"));
        assert!(text.contains("\n10. abcde-fghj9\n\n"));
        assert!(text.ends_with(KEEP_BACKUP_CODES));
    }
}
