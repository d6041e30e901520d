//! Codes sent by e-mail: to prove an address (enrollment) and at each login
//! of a user whose method it is. A code lives for `email.code_valid_secs`
//! (in memory, or in a fleet's database, hashed: `email_codes.rs`) and
//! works once, on any host of the fleet; sending a new one to a user
//! voids the older. Sends are rationed per user (`resend_interval_secs`,
//! `max_sends_per_hour`), and a code only ever goes to an address the user
//! typed for enrollment or proved before.

use crate::audit::{self, Level, field};
use crate::config::Transport;
use crate::email_codes::{EmailCheck, Purpose, SendLimits};
use crate::engine::Engine;
use crate::error::Error;
use crate::login::LoginContext;
use crate::login::LoginOutcome;
use crate::mail::{self, MailError};
use crate::users::Account;
use rand::Rng;
use twofold_protocol::text::human_duration;
use twofold_protocol::{SecretString, TwofoldError};
use zeroize::Zeroizing;

const EMAIL_OFF: &str = "E-mail codes are not available on this host. Ask your administrator, or use an authenticator app.";

fn delivery_failed(user: &str, e: &MailError) -> TwofoldError {
    audit::log(
        Level::Error,
        &format!("email-send-failed {}: {e}", field("user", user)),
    );
    TwofoldError::DeliveryFailed(
        "The code could not be sent by e-mail right now. Try again in a few minutes, use a backup code, \
or contact your administrator."
            .into(),
    )
}

impl Engine {
    /// Whether e-mail codes can be sent at all on this host.
    pub fn email_enabled(&self) -> bool {
        self.config().email.transport != Transport::None
    }

    /// Send a fresh code to `address` for `user`, voiding any older one.
    /// The send is counted before it is tried, so a failing relay is not
    /// hammered either.
    fn send_code(
        &self,
        user: &str,
        address: &str,
        purpose: Purpose,
        now: u64,
    ) -> Result<(), Error> {
        let cfg = &self.config().email;
        let code = Zeroizing::new(format!("{:06}", rand::rng().random_range(0..1_000_000u32)));
        let limits = SendLimits {
            interval: cfg.resend_interval_secs,
            per_hour: cfg.max_sends_per_hour,
        };
        let expires_at = now.saturating_add(cfg.code_valid_secs);
        if let Err(wait) = self
            .email_codes()
            .put(user, &code, &purpose, expires_at, now, limits)?
        {
            audit::log(
                Level::Warning,
                &format!("email-send-throttled {} wait={wait}", field("user", user)),
            );
            return Err(TwofoldError::Throttled(format!(
                "A code was sent by e-mail a moment ago. Use that one, or ask for a new one in {}.",
                human_duration(wait)
            ))
            .into());
        }
        let host = self.hostname();
        let minutes = cfg.code_valid_secs.div_ceil(60);
        let subject = mail::fill(&cfg.subject, host, user, &code, minutes);
        let body = mail::fill(&cfg.body, host, user, &code, minutes);
        if let Err(e) = self.outbox().send(address, &subject, &body) {
            // The code never reached anyone: void it, unless a newer one replaced it.
            self.email_codes().void(user, &code)?;
            return Err(delivery_failed(user, &e).into());
        }
        audit::log(
            Level::Info,
            &format!(
                "email-code-sent {} to={} purpose={}",
                field("user", user),
                mail::mask(address),
                match purpose {
                    Purpose::Login => "login",
                    Purpose::Enroll { .. } => "enroll",
                }
            ),
        );
        Ok(())
    }

    /// Compare a typed code with `user`'s live login code (spent on a match).
    pub(crate) fn check_login_email_code(
        &self,
        user: &str,
        typed: &str,
        now: u64,
    ) -> Result<EmailCheck, Error> {
        Ok(self
            .email_codes()
            .check(user, &Purpose::Login, typed, now)?
            .0)
    }

    pub(crate) fn has_login_email_code(&self, user: &str, now: u64) -> Result<bool, Error> {
        Ok(self.email_codes().has_login_code(user, now)?)
    }

    /// E-mail a login code, if this login may use one; returns the prompt.
    pub fn send_login_code(
        &self,
        account: &Account,
        ctx: &LoginContext,
        now: u64,
    ) -> Result<String, Error> {
        let planned = self.plan(account, ctx, now, false)?;
        let Some(address) = planned.email_to else {
            self.log_login(&account.name, ctx, LoginOutcome::RefusedEmailNotOffered);
            return Err(TwofoldError::InvalidInput(
                "A code by e-mail is not offered for this login.".into(),
            )
            .into());
        };
        self.send_code(&account.name, &address, Purpose::Login, now)?;
        self.log_login(&account.name, ctx, LoginOutcome::EmailCodeSent);
        Ok(format!(
            "Code sent by e-mail to {} (or a backup code): ",
            mail::mask(&address)
        ))
    }

    /// Send a code to `address` to prove it; nothing is stored yet.
    pub fn begin_email_enrollment(
        &self,
        account: &Account,
        address: &str,
        now: u64,
    ) -> Result<String, Error> {
        if !self.email_enabled() {
            return Err(TwofoldError::InvalidInput(EMAIL_OFF.into()).into());
        }
        let address = mail::parse_address(address)
            .map_err(|_| {
                TwofoldError::InvalidInput(
                    "That is not an e-mail address. Type one like name@example.com.".into(),
                )
            })?
            .to_string();
        let adds = match self.store().load(&account.name)? {
            Some(loaded) if loaded.enrollment.email.is_some() => {
                return Err(TwofoldError::AlreadyEnrolled(
                    "You already receive codes by e-mail. Ask an administrator to reset your enrollment to change the address.".into(),
                ).into());
            }
            Some(_) => {
                self.require_proof(&account.name, now)?;
                true
            }
            None => false,
        };
        let purpose = Purpose::Enroll {
            uid: account.uid,
            address: address.clone(),
            adds,
        };
        self.send_code(&account.name, &address, purpose, now)?;
        Ok(mail::mask(&address))
    }

    /// Store the address whose code `input` is; returns backup codes when
    /// e-mail is the user's first method.
    pub fn confirm_email_enrollment(
        &self,
        account: &Account,
        input: &str,
        now: u64,
    ) -> Result<Vec<SecretString>, Error> {
        let user = account.name.as_str();
        let typed = input.trim();
        let probe = Purpose::Enroll {
            uid: account.uid,
            address: String::new(),
            adds: false,
        };
        let (check, spent) = self.email_codes().check(user, &probe, typed, now)?;
        let (address, adds) = match (check, spent) {
            (EmailCheck::Match, Some(Purpose::Enroll { uid, address, adds }))
                if uid == account.uid =>
            {
                (address, adds)
            }
            (EmailCheck::NoMatch, _) => {
                audit::log(
                    Level::Warning,
                    &format!("enrollment-code-wrong {} method=email", field("user", user)),
                );
                return Err(TwofoldError::InvalidInput(
                    "That is not the code in the e-mail. Check the latest message and type its 6 digits.".into(),
                ).into());
            }
            _ => {
                return Err(TwofoldError::NoPendingEnrollment(
                    "No e-mail code is waiting to be confirmed (or it expired). Start again."
                        .into(),
                )
                .into());
            }
        };
        self.store_method(user, adds, twofold_protocol::Method::Email, now, |e| {
            if e.email.is_some() {
                return false;
            }
            e.email = Some(address);
            true
        })
    }

    /// `begin_email_enrollment` inside a login the policy asks to enroll.
    pub fn email_enroll_at_login(
        &self,
        account: &Account,
        address: &str,
        ctx: &LoginContext,
        now: u64,
    ) -> Result<String, Error> {
        self.ensure_offered_at_login(
            account,
            ctx,
            now,
            twofold_protocol::Method::Email,
            "Enrollment by e-mail is not offered for this account now.",
        )?;
        let masked = self.begin_email_enrollment(account, address, now)?;
        self.offers().keep_origin(
            &account.name,
            &ctx.service,
            &ctx.rhost,
            now.saturating_add(self.config().email.code_valid_secs),
            now,
        );
        self.log_login(
            &account.name,
            ctx,
            LoginOutcome::EmailEnrollmentOfferedAtLogin,
        );
        Ok(masked)
    }

    pub fn confirm_email_at_login(
        &self,
        account: &Account,
        code: &str,
        ctx: &LoginContext,
        now: u64,
    ) -> Result<Vec<SecretString>, Error> {
        let codes = self.confirm_email_enrollment(account, code, now)?;
        self.log_login(
            &account.name,
            &self.with_login_origin(&account.name, ctx, now),
            LoginOutcome::EnrolledAtLogin,
        );
        Ok(codes)
    }
}
