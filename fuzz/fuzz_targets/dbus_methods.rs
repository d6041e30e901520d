//! Every D-Bus method of twofoldd with arbitrary arguments and callers, run
//! through the same functions the bus calls (`twofoldd::calls`), against a
//! real engine over a state directory in a temporary folder. Nothing may
//! panic, whatever the order of calls.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use std::path::Path;
use std::sync::OnceLock;
use twofoldd::backup::HashParams;
use twofoldd::calls;
use twofoldd::config::Config;
use twofoldd::engine::Engine;
use twofoldd::mail::{MailError, Outbox};
use twofoldd::store::FileStore;
use twofold_protocol::Login;

#[derive(Arbitrary, Debug)]
enum Call {
    BeginLogin(String, String, String),
    Verify(String, String, String, String),
    BeginEnrollment,
    ConfirmEnrollment(String),
    Status,
    RegenerateBackupCodes(String),
    EnrollAtLogin(String, String, String),
    ConfirmAtLogin(String, String),
    Disable(String),
    Devices,
    ForgetDevices,
    AdminStatus(String),
    AdminUnlock(String),
    AdminReport,
    AdminReportHosts,
    AdminExplain(String, String, String),
    AdminReset(String),
    AdminSetOverride(String, String),
    AdminForgetDevices(String),
    AdminCheckPolicy(String),
    AdminReload,
    SendLoginCode(String, String, String),
    BeginEmailEnrollment(String),
    ConfirmEmailEnrollment(String),
    EmailEnrollAtLogin(String, String, String, String),
    ConfirmEmailAtLogin(String, String),
    BeginAuthenticator(String),
    RemoveAuthenticator(String, String),
    AdminRemoveAuthenticator(String, String),
}

/// E-mail codes are on, and every message is dropped (no network here).
struct Discard;

impl Outbox for Discard {
    fn send(&self, _to: &str, _subject: &str, _body: &str) -> Result<(), MailError> {
        Ok(())
    }
}

/// Root, an account every system has, and a uid with no account.
const CALLERS: [u32; 3] = [0, 65534, 4_000_000];

fn engine() -> &'static Engine {
    static ENGINE: OnceLock<(tempfile::TempDir, Engine)> = OnceLock::new();
    let (_, engine) = ENGINE.get_or_init(|| {
        // In memory where there is a tmpfs: fsync is then nearly free, and
        // the fuzzer runs hundreds of times faster.
        let dir = tempfile::tempdir_in("/dev/shm")
            .or_else(|_| tempfile::tempdir())
            .unwrap();
        let state = dir.path().join("state");
        let policy_file = dir.path().join("policy.toml");
        let policy_text = "remember_device_secs = 3600\ntrusted_networks = [\"10.0.0.0/8\"]\n\
                           [default]\nmode = \"require\"\n";
        std::fs::write(&policy_file, policy_text).unwrap();
        let store = FileStore::init(&state).unwrap();
        let mut cfg = Config {
            state_dir: state,
            policy_file: policy_file.clone(),
            ..Config::default()
        };
        cfg.email.transport = twofoldd::config::Transport::Smtp;
        cfg.email.resend_interval_secs = 0;
        let policy = twofoldd::policy::parse(policy_text, Path::new("policy.toml")).unwrap();
        // Cheap hashing: backup codes are hashed on every enrollment.
        let cheap = HashParams {
            m_cost_kib: 64,
            t_cost: 1,
            p_cost: 1,
        };
        let engine = Engine::new(cfg, store, cheap, policy).with_outbox(Discard);
        (dir, engine)
    });
    engine
}

fuzz_target!(|input: (u8, Vec<Call>)| {
    let (who, script) = input;
    let e = engine();
    let caller = CALLERS[usize::from(who) % CALLERS.len()];
    // The real uid of a root caller's process, as bus.rs reads it.
    let invoker = [None, Some(0), Some(1000)][usize::from(who / 3) % 3];
    for call in script.into_iter().take(8) {
        let _ = match call {
            Call::BeginLogin(u, s, r) => {
                calls::begin_login(e, caller, invoker, &Login::new(u, s, r)).map(drop)
            }
            Call::Verify(u, c, s, r) => {
                calls::verify(e, caller, invoker, None, &Login::new(u, s, r), &c).map(drop)
            }
            Call::BeginEnrollment => calls::begin_enrollment(e, caller).map(drop),
            Call::ConfirmEnrollment(c) => calls::confirm_enrollment(e, caller, &c).map(drop),
            Call::Status => calls::status(e, caller).map(drop),
            Call::RegenerateBackupCodes(c) => {
                calls::regenerate_backup_codes(e, caller, &c).map(drop)
            }
            Call::EnrollAtLogin(u, s, r) => {
                calls::enroll_at_login(e, caller, &Login::new(u, s, r)).map(drop)
            }
            Call::ConfirmAtLogin(u, c) => calls::confirm_at_login(e, caller, &u, &c).map(drop),
            Call::Disable(c) => calls::disable(e, caller, &c),
            Call::Devices => calls::devices(e, caller).map(drop),
            Call::ForgetDevices => calls::forget_devices(e, caller).map(drop),
            Call::AdminStatus(u) => calls::admin_status(e, caller, &u).map(drop),
            Call::AdminUnlock(u) => calls::admin_unlock(e, caller, &u),
            Call::AdminReport => calls::admin_report(e, caller).map(drop),
            Call::AdminReportHosts => calls::admin_report_hosts(e, caller).map(drop),
            Call::AdminExplain(u, s, r) => {
                calls::admin_explain(e, caller, &Login::new(u, s, r)).map(drop)
            }
            Call::AdminReset(u) => calls::admin_reset(e, caller, &u),
            Call::AdminSetOverride(u, m) => calls::admin_set_override(e, caller, &u, &m),
            Call::AdminForgetDevices(u) => calls::admin_forget_devices(e, caller, &u).map(drop),
            // Root may name any file; only the configured one or a missing
            // one here, not /dev/zero.
            Call::AdminCheckPolicy(p) => {
                let path = if p.is_empty() {
                    ""
                } else {
                    "/nonexistent/twofold-fuzz.toml"
                };
                calls::admin_check_policy(e, caller, path).map(drop)
            }
            Call::AdminReload => calls::admin_reload(e, caller).map(drop),
            Call::SendLoginCode(u, s, r) => {
                calls::send_login_code(e, caller, invoker, &Login::new(u, s, r)).map(drop)
            }
            Call::BeginEmailEnrollment(a) => calls::begin_email_enrollment(e, caller, &a).map(drop),
            Call::ConfirmEmailEnrollment(c) => {
                calls::confirm_email_enrollment(e, caller, &c).map(drop)
            }
            Call::EmailEnrollAtLogin(u, a, s, r) => {
                calls::email_enroll_at_login(e, caller, &Login::new(u, s, r), &a).map(drop)
            }
            Call::ConfirmEmailAtLogin(u, c) => {
                calls::confirm_email_at_login(e, caller, &u, &c).map(drop)
            }
            Call::BeginAuthenticator(n) => calls::begin_authenticator(e, caller, &n).map(drop),
            Call::RemoveAuthenticator(n, c) => calls::remove_authenticator(e, caller, &n, &c),
            Call::AdminRemoveAuthenticator(u, n) => {
                calls::admin_remove_authenticator(e, caller, &u, &n)
            }
        };
    }
});
