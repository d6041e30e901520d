//! Enrollment with an authenticator app: an offer held in memory until a
//! code confirms it, at `twofold setup` or inside a login; a method added to
//! an existing enrollment needs a fresh proof with the one the user has.

use crate::audit::{self, Level, field};
use crate::backup::{self};
use crate::engine::Engine;
use crate::error::Error;
use crate::login::LoginContext;
use crate::login::LoginOutcome;
use crate::offers::{Confirmed, Pending};
use crate::store::{App, AppUse, Enrollment, SecretBytes, StoreError, new_generation};
use crate::totp::{self, TotpCheck, TotpParams};
use crate::users::Account;
use rand::Rng;
use twofold_protocol::code::{self, Code};
use twofold_protocol::{EnrollmentOffer, SecretString, TwofoldError};
use zeroize::Zeroizing;

impl Engine {
    /// Offer `user` (whose uid is `uid`) a fresh secret; nothing is stored yet.
    pub fn begin_enrollment(
        &self,
        uid: u32,
        user: &str,
        now: u64,
    ) -> Result<EnrollmentOffer, Error> {
        let adds = match self.store().load(user)? {
            Some(l) if l.enrollment.secret.is_some() => {
                return Err(TwofoldError::AlreadyEnrolled(
                    "You are already enrolled with an authenticator app. To add another one, give \
it a name: `twofold setup --name NAME`."
                        .into(),
                )
                .into());
            }
            Some(_) => {
                self.require_proof(user, now)?;
                true
            }
            None => false,
        };
        self.offer(uid, user, None, adds, now)
    }

    /// A fresh key offered to `uid` (named `name` when it is another app),
    /// held until confirmed or expired.
    pub(crate) fn offer(
        &self,
        uid: u32,
        user: &str,
        name: Option<String>,
        adds: bool,
        now: u64,
    ) -> Result<EnrollmentOffer, Error> {
        let mut secret = Zeroizing::new(vec![0u8; 20]); // 160 bits, as RFC 4226 recommends
        rand::rng().fill(&mut secret[..]);
        let params = TotpParams {
            digits: self.config().totp.digits,
            period: self.config().totp.period,
            window: self.config().totp.window,
        };
        let account = format!("{user}@{}", self.hostname());
        let uri = totp::key_uri(&secret, params, &self.config().totp.issuer, &account)
            .map_err(Error::fault)?;
        let qr = crate::qr::render(&uri).map_err(Error::fault)?;
        let secret_base32 = totp_rs::Secret::from(&secret[..]).to_base32();
        let timeout = self.config().enrollment.offer_timeout_secs;
        let offer = Pending {
            secret,
            params,
            expires_at: now.saturating_add(timeout),
            adds,
            name,
        };
        if !self.offers().offer(uid, offer, now) {
            return Err(TwofoldError::Busy(
                "Too many enrollments are in progress on this host. Try again in a few minutes."
                    .into(),
            )
            .into());
        }
        audit::log(
            Level::Info,
            &format!("enrollment-offered {}", field("user", user)),
        );
        Ok(EnrollmentOffer {
            qr_code: qr.unicode.into(),
            qr_code_ascii: qr.ascii.into(),
            uri: uri.into(),
            secret_base32: secret_base32.into(),
            expires_in_secs: timeout,
        })
    }

    /// Store the pending enrollment if `input` is a current code for it.
    pub fn confirm_enrollment(
        &self,
        uid: u32,
        user: &str,
        input: &str,
        now: u64,
    ) -> Result<Vec<SecretString>, Error> {
        let Ok(Code::Totp(code)) = code::parse(input.as_bytes()) else {
            return Err(TwofoldError::InvalidInput(
                "Type the 6-digit code your app shows for this account.".into(),
            )
            .into());
        };
        let confirmed = self.offers().confirm(uid, now, |offer| {
            match totp::check(&offer.secret, offer.params, &code, now, None)
                .map_err(Error::fault)?
            {
                TotpCheck::Valid(step) => Ok(Some(step)),
                _ => Ok(None),
            }
        })?;
        let (offer, step) = match confirmed {
            Confirmed::Taken { offer, step } => (offer, step),
            Confirmed::NoOffer => {
                return Err(TwofoldError::NoPendingEnrollment(
                    "No enrollment is in progress (or it expired). Run `twofold setup` again."
                        .into(),
                )
                .into());
            }
            Confirmed::Wrong => {
                audit::log(
                    Level::Warning,
                    &format!("enrollment-code-wrong {}", field("user", user)),
                );
                return Err(TwofoldError::InvalidInput(
                    "That code does not match. Check that the phone's clock is right and type the current code.".into(),
                ).into());
            }
        };
        let Pending {
            secret,
            params,
            adds,
            name,
            ..
        } = offer;
        let secret = SecretBytes(secret.to_vec());
        let added = name.clone();
        let codes = self.store_method(user, adds, twofold_protocol::Method::Totp, now, |e| {
            match name {
                // Another app: its own key and replay state.
                Some(name) if e.secret.is_some() => {
                    if super::apps::room_for(e, &name).is_err() {
                        return false;
                    }
                    e.apps.more.push(App {
                        name,
                        secret,
                        digits: params.digits,
                        period: params.period,
                        added: now,
                        last_step: Some(step),
                        used: AppUse::default(),
                    });
                    return true;
                }
                _ if e.secret.is_some() => return false,
                Some(name) => {
                    e.apps.first = AppUse {
                        name: Some(name),
                        added: Some(now),
                        ..AppUse::default()
                    };
                }
                None => {}
            }
            e.secret = Some(secret);
            e.digits = params.digits;
            e.period = params.period;
            // The confirming code cannot log anyone in.
            e.last_step = Some(step);
            true
        })?;
        if let Some(name) = added {
            audit::log(
                Level::Info,
                &format!(
                    "authenticator-added {} {}",
                    field("user", user),
                    field("app", &name)
                ),
            );
        }
        Ok(codes)
    }

    /// Store a method just confirmed for `user`: as their first, with new
    /// backup codes (returned), or, when `adds` (begun after a proof), beside
    /// the one they have, whose backup codes stay. `set` fills the method in
    /// and says false when the user has it already.
    pub(crate) fn store_method(
        &self,
        user: &str,
        adds: bool,
        method: twofold_protocol::Method,
        now: u64,
        set: impl FnOnce(&mut Enrollment) -> bool,
    ) -> Result<Vec<SecretString>, Error> {
        let already =
            || TwofoldError::AlreadyEnrolled(format!("You already have {method} set up."));
        let _guard = self.lock(user);
        let codes = match self.store().load(user)? {
            // Only an offer begun after a proof joins an enrollment.
            Some(_) if !adds => return Err(already().into()),
            Some(loaded) => {
                let mut next = loaded.enrollment.clone();
                if !set(&mut next) {
                    return Err(already().into());
                }
                next.generation = new_generation(next.generation);
                match self.store().write_enrollment(user, Some(&loaded), &next) {
                    Ok(()) => {}
                    Err(StoreError::Conflict { .. }) => {
                        return Err(TwofoldError::Internal(
                            "Your account changed on another host while this was being set up. Start again.".into(),
                        ).into());
                    }
                    Err(e) => return Err(e.into()),
                }
                Vec::new()
            }
            None => {
                let (codes, backup) =
                    backup::generate(self.config().enrollment.backup_codes, self.backup_params())
                        .map_err(Error::fault)?;
                let mut enrollment = Enrollment::new(
                    new_generation(0),
                    None,
                    (self.config().totp.digits, self.config().totp.period),
                    backup,
                    now,
                );
                set(&mut enrollment);
                match self.store().write_enrollment(user, None, &enrollment) {
                    Ok(()) => {}
                    // Enrolled on another host meanwhile.
                    Err(StoreError::Conflict { .. }) => return Err(already().into()),
                    Err(e) => return Err(e.into()),
                }
                self.source_table().forget_user(user);
                codes
            }
        };
        audit::log(
            Level::Info,
            &format!("enrolled {} method={method}", field("user", user)),
        );
        Ok(codes)
    }

    /// Adding a method to an enrollment needs a proof with the existing one.
    pub(crate) fn require_proof(&self, user: &str, now: u64) -> Result<(), Error> {
        if self.offers().take_proof(user, now) {
            Ok(())
        } else {
            Err(TwofoldError::AccessDenied(
                "Adding a second method needs a current code from the one you have first \
(`twofold setup` asks for it)."
                    .into(),
            )
            .into())
        }
    }

    /// Start an enrollment inside a login, if the policy says this login must enroll.
    pub fn enroll_at_login(
        &self,
        account: &Account,
        ctx: &LoginContext,
        now: u64,
    ) -> Result<EnrollmentOffer, Error> {
        // An enrolled user also needs a proof, which `begin_enrollment` spends.
        self.ensure_offered_at_login(
            account,
            ctx,
            now,
            twofold_protocol::Method::Totp,
            "Enrollment at login is not offered for this account now.",
        )?;
        self.log_login(&account.name, ctx, LoginOutcome::EnrollmentOfferedAtLogin);
        let offer = self.begin_enrollment(account.uid, &account.name, now)?;
        self.offers().keep_origin(
            &account.name,
            &ctx.service,
            &ctx.rhost,
            now.saturating_add(offer.expires_in_secs),
            now,
        );
        Ok(offer)
    }

    /// Confirm an enrollment started at login.
    pub fn confirm_at_login(
        &self,
        account: &Account,
        code: &str,
        ctx: &LoginContext,
        now: u64,
    ) -> Result<Vec<SecretString>, Error> {
        let codes = self.confirm_enrollment(account.uid, &account.name, code, now)?;
        self.log_login(
            &account.name,
            &self.with_login_origin(&account.name, ctx, now),
            LoginOutcome::EnrolledAtLogin,
        );
        Ok(codes)
    }

    /// `ctx`, with the service and remote host of the login that began
    /// `user`'s enrollment when the call itself names none.
    pub(crate) fn with_login_origin(
        &self,
        user: &str,
        ctx: &LoginContext,
        now: u64,
    ) -> LoginContext {
        let origin = self.offers().take_origin(user, now);
        match origin {
            Some(o) if ctx.service.is_empty() && ctx.rhost.is_empty() => LoginContext {
                service: o.service,
                rhost: o.rhost,
                ..ctx.clone()
            },
            _ => ctx.clone(),
        }
    }
}
