//! twofoldd's resident memory after work that allocates large blocks for a
//! moment: each enrollment hashes its backup codes with Argon2id, 19 MiB of
//! working memory per hash. Once the replies are in, that memory must be
//! back with the kernel, not kept by the allocator for an idle daemon.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use twofold_e2e::*;
use twofoldd::backup::DEFAULT_PARAMS;

const USERS: [&str; 3] = ["tf-mem1", "tf-mem2", "tf-mem3"];

#[test]
fn enrollments_leave_no_hashing_memory_resident() {
    for u in USERS {
        test_user(u).unwrap();
    }
    let bus = Bus::start().unwrap();
    let daemon = Daemon::start(&bus, "").unwrap();
    let rss = || proc_status_field(daemon.pid(), "VmRSS");
    let before = rss();
    // At once, so that the hashes run on several threads of the daemon.
    let bus = &bus;
    std::thread::scope(|s| {
        for u in USERS {
            s.spawn(move || {
                let e = enroll_confirming(bus, u, 0).unwrap();
                assert_eq!(e.backup_codes.len(), 10, "{u}");
            });
        }
    });
    let after = rss();
    // The working memory is freed before each reply is sent, so no waiting:
    // what stays is far less than one hash's memory (it was more than five).
    let one_hash = u64::from(DEFAULT_PARAMS.m_cost_kib);
    assert!(
        after < before + one_hash,
        "twofoldd grew from {before} KiB to {after} KiB over {} enrollments",
        USERS.len()
    );
}
