//! The D-Bus face of the engine. Every method first asks the bus daemon for
//! the sender's uid (`caller_uid`); `authz` decides what that caller may do;
//! then the work (NSS lookups, fsyncs, hashing) runs on a blocking thread so
//! that one slow call never holds up the others.

use crate::authz;
use crate::engine::{Engine, LoginContext};
use std::sync::Arc;
use twofold_protocol::{
    EnrollmentOffer, LoginPlan, RememberedDevice, ReportRow, SecretString, TwofoldError,
    UserStatus, VerifyReply,
};
use zbus::message::Header;
use zbus::{Connection, fdo, interface};
use zeroize::Zeroizing;

pub struct Service {
    engine: Arc<Engine>,
    dbus: fdo::DBusProxy<'static>,
}

impl Service {
    pub async fn new(engine: Arc<Engine>, conn: &Connection) -> zbus::Result<Self> {
        Ok(Self {
            engine,
            dbus: fdo::DBusProxy::new(conn).await?,
        })
    }

    /// The caller's uid, as the bus daemon knows it. Never taken from arguments.
    async fn caller_uid(&self, header: &Header<'_>) -> Result<u32, TwofoldError> {
        let sender = header
            .sender()
            .ok_or_else(|| TwofoldError::AccessDenied("The caller has no bus name.".into()))?;
        self.dbus
            .get_connection_unix_user(sender.clone().into())
            .await
            .map_err(|e| TwofoldError::ZBus(e.into()))
    }

    /// Run `work` with the caller's uid on a blocking thread.
    async fn run<T: Send + 'static>(
        &self,
        header: &Header<'_>,
        work: impl FnOnce(&Engine, u32) -> Result<T, TwofoldError> + Send + 'static,
    ) -> Result<T, TwofoldError> {
        let caller = self.caller_uid(header).await?;
        let engine = self.engine.clone();
        zruntime::unblock(move || work(&engine, caller)).await
    }
}

fn context(service: &str, rhost: &str, caller_uid: u32) -> LoginContext {
    LoginContext {
        service: service.into(),
        rhost: rhost.into(),
        caller_uid,
    }
}

#[interface(name = "org.twofold.Twofold1")]
impl Service {
    async fn begin_login(
        &self,
        #[zbus(header)] header: Header<'_>,
        user: String,
        service: String,
        rhost: String,
    ) -> Result<LoginPlan, TwofoldError> {
        self.run(&header, move |e, caller| {
            let account = authz::login_target(caller, &user, "BeginLogin")?;
            e.begin_login(&account, &context(&service, &rhost, caller), crate::now())
        })
        .await
    }

    async fn verify(
        &self,
        #[zbus(header)] header: Header<'_>,
        user: String,
        code: String,
        service: String,
        rhost: String,
    ) -> Result<VerifyReply, TwofoldError> {
        let code = Zeroizing::new(code);
        self.run(&header, move |e, caller| {
            let account = authz::login_target(caller, &user, "Verify")?;
            e.verify(
                &account.name,
                &code,
                &context(&service, &rhost, caller),
                crate::now(),
            )
        })
        .await
    }

    async fn begin_enrollment(
        &self,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<EnrollmentOffer, TwofoldError> {
        self.run(&header, |e, caller| {
            let account = authz::own_account(caller)?;
            e.begin_enrollment(account.uid, &account.name, crate::now())
        })
        .await
    }

    async fn confirm_enrollment(
        &self,
        #[zbus(header)] header: Header<'_>,
        code: String,
    ) -> Result<Vec<SecretString>, TwofoldError> {
        let code = Zeroizing::new(code);
        self.run(&header, move |e, caller| {
            let account = authz::own_account(caller)?;
            e.confirm_enrollment(account.uid, &account.name, &code, crate::now())
        })
        .await
    }

    async fn status(&self, #[zbus(header)] header: Header<'_>) -> Result<UserStatus, TwofoldError> {
        self.run(&header, |e, caller| {
            e.status(&authz::own_account(caller)?, crate::now())
        })
        .await
    }

    async fn regenerate_backup_codes(
        &self,
        #[zbus(header)] header: Header<'_>,
        code: String,
    ) -> Result<Vec<SecretString>, TwofoldError> {
        let code = Zeroizing::new(code);
        self.run(&header, move |e, caller| {
            let account = authz::own_account(caller)?;
            e.regenerate_backup_codes(&account.name, &code, crate::now())
        })
        .await
    }

    async fn enroll_at_login(
        &self,
        #[zbus(header)] header: Header<'_>,
        user: String,
        service: String,
        rhost: String,
    ) -> Result<EnrollmentOffer, TwofoldError> {
        self.run(&header, move |e, caller| {
            let account = authz::login_target(caller, &user, "EnrollAtLogin")?;
            e.enroll_at_login(&account, &context(&service, &rhost, caller), crate::now())
        })
        .await
    }

    async fn confirm_at_login(
        &self,
        #[zbus(header)] header: Header<'_>,
        user: String,
        code: String,
    ) -> Result<Vec<SecretString>, TwofoldError> {
        let code = Zeroizing::new(code);
        self.run(&header, move |e, caller| {
            let account = authz::login_target(caller, &user, "ConfirmAtLogin")?;
            e.confirm_at_login(&account, &code, &context("", "", caller), crate::now())
        })
        .await
    }

    async fn disable(
        &self,
        #[zbus(header)] header: Header<'_>,
        code: String,
    ) -> Result<(), TwofoldError> {
        let code = Zeroizing::new(code);
        self.run(&header, move |e, caller| {
            e.disable(&authz::own_account(caller)?, &code, crate::now())
        })
        .await
    }

    async fn devices(
        &self,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<Vec<RememberedDevice>, TwofoldError> {
        self.run(&header, |e, caller| {
            e.devices(&authz::own_account(caller)?.name, crate::now())
        })
        .await
    }

    async fn forget_devices(
        &self,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<u32, TwofoldError> {
        self.run(&header, |e, caller| {
            e.forget_devices(&authz::own_account(caller)?.name, caller)
        })
        .await
    }

    async fn admin_status(
        &self,
        #[zbus(header)] header: Header<'_>,
        user: String,
    ) -> Result<UserStatus, TwofoldError> {
        self.run(&header, move |e, caller| {
            authz::admin(caller, &e.config().admin_group, "AdminStatus")?;
            e.status(&authz::named_account(&user)?, crate::now())
        })
        .await
    }

    async fn admin_unlock(
        &self,
        #[zbus(header)] header: Header<'_>,
        user: String,
    ) -> Result<(), TwofoldError> {
        self.run(&header, move |e, caller| {
            let group = &e.config().admin_group;
            authz::admin(caller, group, "AdminUnlock")?;
            let account = authz::named_account(&user)?;
            authz::may_unlock(caller, &account, group, "AdminUnlock")?;
            e.unlock(&account.name, caller, crate::now())
        })
        .await
    }

    async fn admin_report(
        &self,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<Vec<ReportRow>, TwofoldError> {
        self.run(&header, |e, caller| {
            authz::admin(caller, &e.config().admin_group, "AdminReport")?;
            e.report(crate::now())
        })
        .await
    }

    async fn admin_explain(
        &self,
        #[zbus(header)] header: Header<'_>,
        user: String,
        service: String,
        rhost: String,
    ) -> Result<Vec<String>, TwofoldError> {
        self.run(&header, move |e, caller| {
            authz::admin(caller, &e.config().admin_group, "AdminExplain")?;
            let account = authz::named_account(&user)?;
            e.explain(&account, &context(&service, &rhost, 0), crate::now())
        })
        .await
    }

    async fn admin_reset(
        &self,
        #[zbus(header)] header: Header<'_>,
        user: String,
    ) -> Result<(), TwofoldError> {
        self.run(&header, move |e, caller| {
            let group = &e.config().admin_group;
            authz::admin(caller, group, "AdminReset")?;
            let account = authz::named_account(&user)?;
            authz::may_unlock(caller, &account, group, "AdminReset")?;
            e.reset(&account.name, caller)
        })
        .await
    }

    async fn admin_set_override(
        &self,
        #[zbus(header)] header: Header<'_>,
        user: String,
        mode: String,
    ) -> Result<(), TwofoldError> {
        self.run(&header, move |e, caller| {
            let group = &e.config().admin_group;
            authz::admin(caller, group, "AdminSetOverride")?;
            let account = authz::named_account(&user)?;
            authz::may_unlock(caller, &account, group, "AdminSetOverride")?;
            e.set_override(&account.name, &mode, caller)
        })
        .await
    }

    async fn admin_forget_devices(
        &self,
        #[zbus(header)] header: Header<'_>,
        user: String,
    ) -> Result<u32, TwofoldError> {
        self.run(&header, move |e, caller| {
            authz::admin(caller, &e.config().admin_group, "AdminForgetDevices")?;
            e.forget_devices(&authz::named_account(&user)?.name, caller)
        })
        .await
    }

    async fn admin_check_policy(
        &self,
        #[zbus(header)] header: Header<'_>,
        path: String,
    ) -> Result<String, TwofoldError> {
        self.run(&header, move |e, caller| {
            authz::admin(caller, &e.config().admin_group, "AdminCheckPolicy")?;
            if path.is_empty() {
                return crate::rules::check_policy(&e.config().policy_file);
            }
            // Reading any file as root, and quoting it in errors, is for root only.
            if caller != 0 {
                crate::audit::log(
                    crate::audit::Level::Warning,
                    &format!(
                        "access-denied caller_uid={caller} method=AdminCheckPolicy path-given"
                    ),
                );
                return Err(TwofoldError::AccessDenied(
                    "Only root may check a file other than the configured policy.".into(),
                ));
            }
            crate::rules::check_policy(std::path::Path::new(&path))
        })
        .await
    }

    async fn admin_reload(
        &self,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<String, TwofoldError> {
        self.run(&header, |e, caller| {
            authz::admin(caller, &e.config().admin_group, "AdminReload")?;
            e.reload_policy(Some(caller))
        })
        .await
    }
}
