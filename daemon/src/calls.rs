//! Every D-Bus method, as a plain function of the engine, the caller's uid
//! (from the bus, see `bus.rs`) and the method's arguments: `authz` decides
//! what the caller may do, then the engine does it. `bus.rs` runs these on a
//! blocking thread; the fuzz target `dbus_methods` calls them directly with
//! arbitrary arguments.

use crate::authz;
use crate::engine::Engine;
use crate::error::Error;
use crate::limits::small;
use crate::login::LoginContext;
use crate::users::Account;
use twofold_protocol::{
    EnrollmentOffer, Login, LoginPlan, Mode, OptionalMode, RememberedDevice, ReportRow,
    ReportRowV1, SecretString, TwofoldError, UserStatus, VerifyReply, method,
};

type Result<T> = std::result::Result<T, TwofoldError>;

fn context(service: &str, rhost: &str, caller_uid: u32) -> LoginContext {
    LoginContext {
        service: service.into(),
        rhost: rhost.into(),
        caller_uid,
        invoker: None,
    }
}

/// The context of a login step, with the real uid of the calling process
/// (`invoker`, read by `bus.rs`; `None` when unknown).
fn login_context(login: &Login, caller: u32, invoker: Option<u32>) -> LoginContext {
    LoginContext {
        invoker,
        ..context(&login.service, &login.rhost, caller)
    }
}

/// A login's three names, each within the size limit.
fn small_login(login: &Login) -> Result<()> {
    small(&[
        ("user name", &login.user),
        ("service name", &login.service),
        ("host name", &login.rhost),
    ])
}

/// What this login must do, and the account `user` resolved to, which the
/// same connection's `verify` of the same login may pass back (`bus.rs`
/// keeps it per sender) instead of asking NSS again.
pub fn begin_login(
    e: &Engine,
    caller: u32,
    invoker: Option<u32>,
    login: &Login,
) -> Result<(LoginPlan, Account)> {
    small_login(login)?;
    let ctx = login_context(login, caller, invoker);
    let account = login_account(e, caller, login, &ctx, method::BEGIN_LOGIN)?;
    let plan = e
        .begin_login(&account, &ctx, crate::now())
        .map_err(Error::into_reply)?;
    Ok((plan, account))
}

/// The account a login names, if `caller` may ask about it. A name that is
/// no account is logged as root's login decision; another caller's
/// refusal is logged by `authz` as a denied call.
fn login_account(
    e: &Engine,
    caller: u32,
    login: &Login,
    ctx: &LoginContext,
    method: &str,
) -> Result<Account> {
    authz::login_target(caller, &login.user, method).inspect_err(|refused| {
        if caller == 0 && matches!(refused, TwofoldError::UnknownUser(_)) {
            e.log_unknown_user(&login.user, ctx);
        }
    })
}

/// Verify `code` for the login's user. `resolved`: the account name this
/// caller's `begin_login` of the same login resolved the user to, if any;
/// without one, NSS is asked (and the caller's right to name the user
/// checked) as for any call.
pub fn verify(
    e: &Engine,
    caller: u32,
    invoker: Option<u32>,
    resolved: Option<&str>,
    login: &Login,
    code: &str,
) -> Result<VerifyReply> {
    small(&[
        ("user name", &login.user),
        ("code", code),
        ("service name", &login.service),
        ("host name", &login.rhost),
    ])?;
    let ctx = login_context(login, caller, invoker);
    let account = match resolved {
        Some(name) => name.to_string(),
        None => login_account(e, caller, login, &ctx, method::VERIFY)?.name,
    };
    e.verify(&account, code, &ctx, crate::now())
        .map_err(Error::into_reply)
}

pub fn begin_enrollment(e: &Engine, caller: u32) -> Result<EnrollmentOffer> {
    let account = authz::own_account(caller)?;
    e.begin_enrollment(account.uid, &account.name, crate::now())
        .map_err(Error::into_reply)
}

pub fn confirm_enrollment(e: &Engine, caller: u32, code: &str) -> Result<Vec<SecretString>> {
    small(&[("code", code)])?;
    let account = authz::own_account(caller)?;
    e.confirm_enrollment(account.uid, &account.name, code, crate::now())
        .map_err(Error::into_reply)
}

pub fn begin_authenticator(e: &Engine, caller: u32, name: &str) -> Result<EnrollmentOffer> {
    small(&[("name", name)])?;
    let account = authz::own_account(caller)?;
    e.begin_app(&account, name, crate::now())
        .map_err(Error::into_reply)
}

pub fn remove_authenticator(e: &Engine, caller: u32, name: &str, code: &str) -> Result<()> {
    small(&[("name", name), ("code", code)])?;
    let account = authz::own_account(caller)?;
    e.remove_app_of_own(&account, name, code, crate::now())
        .map_err(Error::into_reply)
}

pub fn admin_remove_authenticator(e: &Engine, caller: u32, user: &str, name: &str) -> Result<()> {
    small(&[("user name", user), ("name", name)])?;
    let group = &e.config().admin_group;
    authz::admin(caller, group, method::ADMIN_REMOVE_AUTHENTICATOR)?;
    let account = authz::named_account(user)?;
    authz::may_unlock(caller, &account, group, method::ADMIN_REMOVE_AUTHENTICATOR)?;
    e.admin_remove_app(&account.name, name, caller)
        .map_err(Error::into_reply)
}

pub fn status(e: &Engine, caller: u32) -> Result<UserStatus> {
    e.status(&authz::own_account(caller)?, crate::now())
        .map_err(Error::into_reply)
}

pub fn regenerate_backup_codes(e: &Engine, caller: u32, code: &str) -> Result<Vec<SecretString>> {
    small(&[("code", code)])?;
    let account = authz::own_account(caller)?;
    e.regenerate_backup_codes(&account, code, crate::now())
        .map_err(Error::into_reply)
}

pub fn enroll_at_login(e: &Engine, caller: u32, login: &Login) -> Result<EnrollmentOffer> {
    small_login(login)?;
    let account = authz::login_target(caller, &login.user, method::ENROLL_AT_LOGIN)?;
    let ctx = context(&login.service, &login.rhost, caller);
    e.enroll_at_login(&account, &ctx, crate::now())
        .map_err(Error::into_reply)
}

pub fn confirm_at_login(
    e: &Engine,
    caller: u32,
    user: &str,
    code: &str,
) -> Result<Vec<SecretString>> {
    small(&[("user name", user), ("code", code)])?;
    let account = authz::login_target(caller, user, method::CONFIRM_AT_LOGIN)?;
    e.confirm_at_login(&account, code, &context("", "", caller), crate::now())
        .map_err(Error::into_reply)
}

pub fn disable(e: &Engine, caller: u32, code: &str) -> Result<()> {
    small(&[("code", code)])?;
    e.disable(&authz::own_account(caller)?, code, crate::now())
        .map_err(Error::into_reply)
}

pub fn devices(e: &Engine, caller: u32) -> Result<Vec<RememberedDevice>> {
    e.devices(&authz::own_account(caller)?.name, crate::now())
        .map_err(Error::into_reply)
}

pub fn forget_devices(e: &Engine, caller: u32) -> Result<u32> {
    e.forget_devices(&authz::own_account(caller)?.name, caller)
        .map_err(Error::into_reply)
}

pub fn admin_status(e: &Engine, caller: u32, user: &str) -> Result<UserStatus> {
    small(&[("user name", user)])?;
    authz::admin(caller, &e.config().admin_group, method::ADMIN_STATUS)?;
    e.status(&authz::named_account(user)?, crate::now())
        .map_err(Error::into_reply)
}

pub fn admin_unlock(e: &Engine, caller: u32, user: &str) -> Result<()> {
    small(&[("user name", user)])?;
    let group = &e.config().admin_group;
    authz::admin(caller, group, method::ADMIN_UNLOCK)?;
    let account = authz::named_account(user)?;
    authz::may_unlock(caller, &account, group, method::ADMIN_UNLOCK)?;
    e.unlock(&account.name, caller, crate::now())
        .map_err(Error::into_reply)
}

/// The report as `AdminReport` sends it (for commands older than the last host).
pub fn admin_report(e: &Engine, caller: u32) -> Result<Vec<ReportRowV1>> {
    authz::admin(caller, &e.config().admin_group, method::ADMIN_REPORT)?;
    Ok(e.report(crate::now())
        .map_err(Error::into_reply)?
        .into_iter()
        .map(Into::into)
        .collect())
}

pub fn admin_report_hosts(e: &Engine, caller: u32) -> Result<Vec<ReportRow>> {
    authz::admin(caller, &e.config().admin_group, method::ADMIN_REPORT_HOSTS)?;
    e.report(crate::now()).map_err(Error::into_reply)
}

/// Which rule applies to this (imagined) login, and why.
pub fn admin_explain(e: &Engine, caller: u32, login: &Login) -> Result<Vec<String>> {
    small_login(login)?;
    authz::admin(caller, &e.config().admin_group, method::ADMIN_EXPLAIN)?;
    let account = authz::named_account(&login.user)?;
    let ctx = context(&login.service, &login.rhost, 0);
    e.explain(&account, &ctx, crate::now())
        .map_err(Error::into_reply)
}

pub fn admin_reset(e: &Engine, caller: u32, user: &str) -> Result<()> {
    small(&[("user name", user)])?;
    let group = &e.config().admin_group;
    authz::admin(caller, group, method::ADMIN_RESET)?;
    let account = authz::named_account(user)?;
    authz::may_unlock(caller, &account, group, method::ADMIN_RESET)?;
    e.reset(&account.name, caller).map_err(Error::into_reply)
}

pub fn admin_set_override(e: &Engine, caller: u32, user: &str, mode: &str) -> Result<()> {
    small(&[("user name", user), ("mode", mode)])?;
    let group = &e.config().admin_group;
    authz::admin(caller, group, method::ADMIN_SET_OVERRIDE)?;
    let account = authz::named_account(user)?;
    authz::may_unlock(caller, &account, group, method::ADMIN_SET_OVERRIDE)?;
    e.set_override(&account.name, override_mode(mode)?, caller)
        .map_err(Error::into_reply)
}

/// An override as `AdminSetOverride` takes it: `require`, `exempt`, or
/// empty to clear (checked only once the caller may set one).
fn override_mode(text: &str) -> Result<Option<Mode>> {
    match OptionalMode::parse(text) {
        Some(OptionalMode(mode @ (None | Some(Mode::Require | Mode::Exempt)))) => Ok(mode),
        _ => Err(TwofoldError::InvalidInput(format!(
            "An override is `require`, `exempt` or empty (clear), not {text:?}."
        ))),
    }
}

pub fn admin_forget_devices(e: &Engine, caller: u32, user: &str) -> Result<u32> {
    small(&[("user name", user)])?;
    authz::admin(
        caller,
        &e.config().admin_group,
        method::ADMIN_FORGET_DEVICES,
    )?;
    e.forget_devices(&authz::named_account(user)?.name, caller)
        .map_err(Error::into_reply)
}

pub fn admin_check_policy(e: &Engine, caller: u32, path: &str) -> Result<String> {
    small(&[("path", path)])?;
    authz::admin(caller, &e.config().admin_group, method::ADMIN_CHECK_POLICY)?;
    if path.is_empty() {
        // The daemon's own configuration: its policy, and its store now
        // (said also when the policy is wrong).
        let store = match e.store().health() {
            Ok(ready) => format!("Store: {ready}."),
            Err(err) => format!(
                "Store: NOT READY: {err}. Logins that need it are refused until this is fixed."
            ),
        };
        return match crate::admin::check_policy(&e.config().policy_file) {
            Ok(policy) => Ok(format!("{policy}\n{store}")),
            Err(TwofoldError::InvalidInput(wrong)) => {
                Err(TwofoldError::InvalidInput(format!("{wrong}\n{store}")))
            }
            Err(other) => Err(other),
        };
    }
    // Reading any file as root, and quoting it in errors, is for root only.
    if caller != 0 {
        crate::audit::log(
            crate::audit::Level::Warning,
            &format!(
                "access-denied caller_uid={caller} method={} path-given",
                method::ADMIN_CHECK_POLICY
            ),
        );
        return Err(TwofoldError::AccessDenied(
            "Only root may check a file other than the configured policy.".into(),
        ));
    }
    crate::admin::check_policy(std::path::Path::new(path))
}

pub fn admin_reload(e: &Engine, caller: u32) -> Result<String> {
    authz::admin(caller, &e.config().admin_group, method::ADMIN_RELOAD)?;
    e.reload_policy(Some(caller)).map_err(Error::into_reply)
}

pub fn send_login_code(
    e: &Engine,
    caller: u32,
    invoker: Option<u32>,
    login: &Login,
) -> Result<String> {
    small_login(login)?;
    let account = authz::login_target(caller, &login.user, method::SEND_LOGIN_CODE)?;
    e.send_login_code(
        &account,
        &login_context(login, caller, invoker),
        crate::now(),
    )
    .map_err(Error::into_reply)
}

pub fn begin_email_enrollment(e: &Engine, caller: u32, address: &str) -> Result<String> {
    small(&[("address", address)])?;
    let account = authz::own_account(caller)?;
    e.begin_email_enrollment(&account, address, crate::now())
        .map_err(Error::into_reply)
}

pub fn confirm_email_enrollment(e: &Engine, caller: u32, code: &str) -> Result<Vec<SecretString>> {
    small(&[("code", code)])?;
    let account = authz::own_account(caller)?;
    e.confirm_email_enrollment(&account, code, crate::now())
        .map_err(Error::into_reply)
}

pub fn email_enroll_at_login(
    e: &Engine,
    caller: u32,
    login: &Login,
    address: &str,
) -> Result<String> {
    small(&[
        ("user name", &login.user),
        ("address", address),
        ("service name", &login.service),
        ("host name", &login.rhost),
    ])?;
    let account = authz::login_target(caller, &login.user, method::EMAIL_ENROLL_AT_LOGIN)?;
    e.email_enroll_at_login(
        &account,
        address,
        &context(&login.service, &login.rhost, caller),
        crate::now(),
    )
    .map_err(Error::into_reply)
}

pub fn confirm_email_at_login(
    e: &Engine,
    caller: u32,
    user: &str,
    code: &str,
) -> Result<Vec<SecretString>> {
    small(&[("user name", user), ("code", code)])?;
    let account = authz::login_target(caller, user, method::CONFIRM_EMAIL_AT_LOGIN)?;
    e.confirm_email_at_login(&account, code, &context("", "", caller), crate::now())
        .map_err(Error::into_reply)
}
