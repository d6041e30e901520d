//! Several apps per user: each logs in with its own key and replay state;
//! adding and removing them.

use super::tests::*;

/// Add the app `name` to "alice" at `now` (after a proof); returns its key.
fn add_app(e: &Engine, name: &str, now: u64) -> Vec<u8> {
    e.offers().record_proof("alice", now);
    let offer = e.begin_app(&account("alice"), name, now).unwrap();
    let secret = secret_of(&offer);
    let code = totp::code_at(&secret, SIX, now).unwrap();
    let codes = e.confirm_enrollment(UID, "alice", &code, now).unwrap();
    assert!(codes.is_empty(), "the backup codes stay");
    secret
}

/// Two apps, each with its own key and replay state: both log in, and a
/// code of one never blocks the other's code for the same step.
#[test]
fn several_apps_each_log_in_and_none_blocks_another() {
    let (_d, e) = engine();
    let (first, _) = enroll(&e);
    let phone = add_app(&e, "phone", T0);
    let now = T0 + 30;
    for secret in [&first, &phone] {
        let code = totp::code_at(secret, SIX, now).unwrap();
        assert_eq!(
            e.verify("alice", &code, &ctx(), now).unwrap().outcome,
            VerifyOutcome::Accepted
        );
        assert_eq!(
            e.verify("alice", &code, &ctx(), now).unwrap().outcome,
            VerifyOutcome::Replayed
        );
    }
    let status = e.status(&account("alice"), now).unwrap();
    let names: Vec<&str> = status
        .authenticators
        .iter()
        .map(|a| a.name.as_str())
        .collect();
    assert_eq!(names, ["app", "phone"]);
    assert!(status.authenticators.iter().all(|a| a.last_used == now));
    // A name twice, a bad name, and more than the limit are refused.
    e.offers().record_proof("alice", now);
    assert!(matches!(
        e.begin_app(&account("alice"), "phone", now),
        Err(Error::Refused(TwofoldError::AlreadyEnrolled(_)))
    ));
    assert!(e.begin_app(&account("alice"), "my phone", now).is_err());
    for n in 0..3 {
        add_app(&e, &format!("extra{n}"), now);
    }
    e.offers().record_proof("alice", now);
    let full = e.begin_app(&account("alice"), "sixth", now).unwrap_err();
    assert!(format!("{full:?}").contains("the most allowed"), "{full:?}");
    // State written with several apps loads again (a new engine).
    let loaded = e.store().load("alice").unwrap().unwrap();
    assert_eq!(loaded.enrollment.app_list().len(), crate::store::MAX_APPS);
}

/// Removing needs a current code; the last method cannot be removed under
/// `require`; the remaining app keeps working, the removed one does not.
#[test]
fn removing_an_app_keeps_the_others_and_never_the_last_under_require() {
    let (_d, e) = engine_with_policy("[default]\nmode = \"require\"\n");
    let (first, _) = enroll(&e);
    let phone = add_app(&e, "phone", T0);
    let now = T0 + 60;
    let code = |s: &[u8], t: u64| totp::code_at(s, SIX, t).unwrap();
    assert!(
        e.remove_app_of_own(&account("alice"), "phone", "000000", now)
            .is_err(),
        "a wrong code removes nothing"
    );
    e.remove_app_of_own(&account("alice"), "app", &code(&phone, now), now)
        .unwrap();
    let left = e.status(&account("alice"), now).unwrap().authenticators;
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].name, "phone");
    // The removed app's codes no longer log in; the other's still do.
    let later = now + 30;
    assert_eq!(
        e.verify("alice", &code(&first, later), &ctx(), later)
            .unwrap()
            .outcome,
        VerifyOutcome::Wrong
    );
    assert_eq!(
        e.verify("alice", &code(&phone, later), &ctx(), later)
            .unwrap()
            .outcome,
        VerifyOutcome::Accepted
    );
    let last = e
        .remove_app_of_own(
            &account("alice"),
            "phone",
            &code(&phone, later + 30),
            later + 30,
        )
        .unwrap_err();
    assert!(
        format!("{last:?}").contains("requires two-factor"),
        "{last:?}"
    );
    // Nor can an administrator remove the last method (reset is for that).
    assert!(e.admin_remove_app("alice", "phone", 0).is_err());
}
