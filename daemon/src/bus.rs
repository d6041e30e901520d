//! The D-Bus face of the engine. Every method first asks the bus daemon for
//! the sender's uid (`caller_uid`), decides what that caller may do, then runs
//! the engine on a blocking thread (it fsyncs and hashes).

use crate::audit::{self, Level, field};
use crate::authz;
use crate::engine::{Engine, LoginContext};
use crate::users::{self, Account};
use std::sync::Arc;
use twofold_protocol::{
    EnrollmentOffer, LoginPlan, SecretString, TwofoldError, UserStatus, VerifyReply,
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

    /// The account named `user`, if the caller may act for it.
    async fn target(
        &self,
        header: &Header<'_>,
        user: &str,
        method: &str,
    ) -> Result<Account, TwofoldError> {
        let caller = self.caller_uid(header).await?;
        let account = lookup(user)?;
        if !authz::may_act_for(caller, account.uid) {
            audit::log(
                Level::Warning,
                &format!(
                    "access-denied caller_uid={caller} method={method} {}",
                    field("user", user)
                ),
            );
            return Err(TwofoldError::AccessDenied(format!(
                "Only root may {method} for another user; you may only for your own account."
            )));
        }
        Ok(account)
    }

    /// The caller's own account.
    async fn own_account(&self, header: &Header<'_>) -> Result<Account, TwofoldError> {
        let uid = self.caller_uid(header).await?;
        let account = users::by_uid(uid)
            .map_err(|e| TwofoldError::Internal(e.to_string()))?
            .ok_or_else(|| {
                TwofoldError::UnknownUser(format!("uid {uid} has no user name on this host."))
            })?;
        twofold_protocol::user::validate(&account.name).map_err(|e| {
            TwofoldError::UnknownUser(format!("Your user name cannot be used with twofold: {e}."))
        })?;
        Ok(account)
    }

    /// The caller's uid if it is root or in the admin group.
    async fn admin(&self, header: &Header<'_>, method: &str) -> Result<u32, TwofoldError> {
        let uid = self.caller_uid(header).await?;
        if uid == 0 {
            return Ok(uid);
        }
        let group = &self.engine.config().admin_group;
        let is_admin = match users::by_uid(uid) {
            Ok(Some(account)) => users::in_group(&account, group).unwrap_or(false),
            _ => false,
        };
        if !is_admin {
            audit::log(
                Level::Warning,
                &format!("access-denied caller_uid={uid} method={method}"),
            );
            return Err(TwofoldError::AccessDenied(format!(
                "Only root or members of the group '{group}' may run administrative commands."
            )));
        }
        Ok(uid)
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Engine) -> Result<T, TwofoldError> + Send + 'static,
    ) -> Result<T, TwofoldError> {
        let engine = self.engine.clone();
        zruntime::unblock(move || work(&engine)).await
    }
}

/// A user name from an argument: checked, then looked up through NSS.
fn lookup(user: &str) -> Result<Account, TwofoldError> {
    twofold_protocol::user::validate(user)
        .map_err(|e| TwofoldError::UnknownUser(format!("No such user ({e}).")))?;
    users::by_name(user)
        .map_err(|e| TwofoldError::Internal(e.to_string()))?
        .ok_or_else(|| TwofoldError::UnknownUser("No such user.".into()))
}

#[interface(name = "org.twofold.Twofold1")]
impl Service {
    async fn begin_login(
        &self,
        #[zbus(header)] header: Header<'_>,
        user: &str,
        service: &str,
        rhost: &str,
    ) -> Result<LoginPlan, TwofoldError> {
        let account = self.target(&header, user, "BeginLogin").await?;
        let ctx = LoginContext {
            service: service.into(),
            rhost: rhost.into(),
        };
        self.run(move |e| e.begin_login(&account.name, &ctx, crate::now()))
            .await
    }

    async fn verify(
        &self,
        #[zbus(header)] header: Header<'_>,
        user: &str,
        code: &str,
        service: &str,
        rhost: &str,
    ) -> Result<VerifyReply, TwofoldError> {
        let account = self.target(&header, user, "Verify").await?;
        let ctx = LoginContext {
            service: service.into(),
            rhost: rhost.into(),
        };
        let code = Zeroizing::new(code.to_string());
        self.run(move |e| e.verify(&account.name, &code, &ctx, crate::now()))
            .await
    }

    async fn begin_enrollment(
        &self,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<EnrollmentOffer, TwofoldError> {
        let account = self.own_account(&header).await?;
        self.run(move |e| e.begin_enrollment(account.uid, &account.name, crate::now()))
            .await
    }

    async fn confirm_enrollment(
        &self,
        #[zbus(header)] header: Header<'_>,
        code: &str,
    ) -> Result<Vec<SecretString>, TwofoldError> {
        let account = self.own_account(&header).await?;
        let code = Zeroizing::new(code.to_string());
        self.run(move |e| e.confirm_enrollment(account.uid, &account.name, &code, crate::now()))
            .await
    }

    async fn status(&self, #[zbus(header)] header: Header<'_>) -> Result<UserStatus, TwofoldError> {
        let account = self.own_account(&header).await?;
        self.run(move |e| e.status(&account.name, crate::now()))
            .await
    }

    async fn regenerate_backup_codes(
        &self,
        #[zbus(header)] header: Header<'_>,
        code: &str,
    ) -> Result<Vec<SecretString>, TwofoldError> {
        let account = self.own_account(&header).await?;
        let code = Zeroizing::new(code.to_string());
        self.run(move |e| e.regenerate_backup_codes(&account.name, &code, crate::now()))
            .await
    }

    async fn admin_status(
        &self,
        #[zbus(header)] header: Header<'_>,
        user: &str,
    ) -> Result<UserStatus, TwofoldError> {
        self.admin(&header, "AdminStatus").await?;
        let account = lookup(user)?;
        self.run(move |e| e.status(&account.name, crate::now()))
            .await
    }

    async fn admin_unlock(
        &self,
        #[zbus(header)] header: Header<'_>,
        user: &str,
    ) -> Result<(), TwofoldError> {
        let admin_uid = self.admin(&header, "AdminUnlock").await?;
        let account = lookup(user)?;
        self.run(move |e| e.unlock(&account.name, admin_uid, crate::now()))
            .await
    }
}
