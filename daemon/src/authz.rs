//! Who may do what. The caller's uid always comes from the bus daemon.

/// Root (the PAM stacks of sshd, login, su, sudo) may act for any user;
/// everyone else only for their own account (e.g. a screen locker).
#[must_use]
pub fn may_act_for(caller_uid: u32, target_uid: u32) -> bool {
    caller_uid == 0 || caller_uid == target_uid
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_root_acts_for_others() {
        assert!(may_act_for(0, 1000));
        assert!(may_act_for(1000, 1000));
        assert!(!may_act_for(1000, 1001));
        assert!(!may_act_for(1000, 0));
    }
}
