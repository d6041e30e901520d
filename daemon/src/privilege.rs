//! Least privilege: once started, twofoldd needs no capability at all.
//!
//! It runs as root, and everything it touches belongs to root or is world
//! readable: its state directory (root, 0700) and configuration (root), the
//! system bus socket, syslog's socket, and NSS (files, or a directory
//! service's client socket). Owning those files is enough; no capability
//! (CAP_DAC_OVERRIDE and the like) is needed to read or write them. So all
//! are dropped — effective, permitted, inheritable, ambient and the bounding
//! set — and no-new-privileges is set, so neither the daemon nor anything it
//! could be tricked into running gains any back.

use caps::{CapSet, Capability, CapsHashSet};

#[derive(Debug, thiserror::Error)]
pub enum PrivilegeError {
    #[error("cannot set no-new-privileges: {0}")]
    NoNewPrivs(std::io::Error),
    #[error("cannot drop capability {cap} from the {set:?} set: {source}")]
    Drop {
        cap: Capability,
        set: CapSet,
        source: caps::errors::CapsError,
    },
    #[error("cannot clear the {set:?} capability set: {source}")]
    Clear {
        set: CapSet,
        source: caps::errors::CapsError,
    },
    #[error("capabilities are still held after dropping them: {0:?}")]
    StillHeld(CapsHashSet),
    #[error("{0} threads are running; capabilities must be dropped before any other starts")]
    Threads(usize),
}

/// Drop every capability of this thread's process for good. Call before
/// any other thread is started (capability sets are per thread; threads
/// started later inherit the empty sets).
pub fn drop_all() -> Result<(), PrivilegeError> {
    let threads = std::fs::read_dir("/proc/self/task").map_or(1, |d| d.count());
    if threads != 1 {
        return Err(PrivilegeError::Threads(threads));
    }
    // SAFETY: prctl with PR_SET_NO_NEW_PRIVS takes integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(PrivilegeError::NoNewPrivs(std::io::Error::last_os_error()));
    }
    // The bounding set first: dropping from it needs CAP_SETPCAP, which is
    // about to go with the rest. Started without it (not as root), there is
    // nothing to give up there, and no-new-privileges already stops exec
    // from adding any.
    let may_shrink_bounding =
        caps::has_cap(None, CapSet::Effective, Capability::CAP_SETPCAP).unwrap_or(false);
    let bounding = caps::read(None, CapSet::Bounding).map_err(|source| PrivilegeError::Clear {
        set: CapSet::Bounding,
        source,
    })?;
    for cap in bounding.into_iter().filter(|_| may_shrink_bounding) {
        caps::drop(None, CapSet::Bounding, cap).map_err(|source| PrivilegeError::Drop {
            cap,
            set: CapSet::Bounding,
            source,
        })?;
    }
    for set in [
        CapSet::Ambient,
        CapSet::Inheritable,
        CapSet::Effective,
        CapSet::Permitted,
    ] {
        caps::clear(None, set).map_err(|source| PrivilegeError::Clear { set, source })?;
    }
    let mut left = CapsHashSet::new();
    let mut sets = vec![CapSet::Effective, CapSet::Permitted];
    if may_shrink_bounding {
        sets.push(CapSet::Bounding);
    }
    for set in sets {
        left.extend(caps::read(None, set).unwrap_or_default());
    }
    if left.is_empty() {
        Ok(())
    } else {
        Err(PrivilegeError::StillHeld(left))
    }
}

/// No core file, ever: a dump of the daemon would hold the secrets of the
/// users whose logins it was checking. A zero core size limit (kept by
/// anything it starts) and not dumpable (which also keeps other processes of
/// root's uid without CAP_SYS_PTRACE from attaching).
pub fn no_core_dumps() -> std::io::Result<()> {
    let mut now = libc::rlimit {
        rlim_cur: 1,
        rlim_max: 1,
    };
    // SAFETY: getrlimit writes only the struct we pass.
    let known = unsafe { libc::getrlimit(libc::RLIMIT_CORE, &mut now) } == 0;
    // Under the shipped unit (LimitCORE=0) it is zero already, and setrlimit
    // is outside its system call filter.
    if !known || now.rlim_cur != 0 || now.rlim_max != 0 {
        let zero = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: setrlimit reads the struct we pass and nothing else.
        if unsafe { libc::setrlimit(libc::RLIMIT_CORE, &zero) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    // SAFETY: prctl with PR_SET_DUMPABLE takes integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
