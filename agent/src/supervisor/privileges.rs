//! What a started program may hold: nothing of the agent's privileges. Used between clone and
//! execve of the app (supervisor/spawn.rs) and in `pre_exec` of job commands (job.rs).

use std::io;

/// Empties the calling process's capability bounding, ambient and inheritable sets and sets
/// no_new_privs, so that what it executes next can never hold a capability the agent holds
/// (a setuid-root or file-capability binary included). For the app's child and `pre_exec` of
/// job commands: raw `prctl` calls only (async-signal-safe, no allocation). Dropping from the
/// bounding set needs CAP_SETPCAP (bake-agent.service keeps it for this); a set that is empty
/// already (bake-user-stats.service) needs nothing.
pub fn restrict_exec() -> io::Result<()> {
    // prctl's arguments are unsigned longs: pass them as such (a variadic i32 may arrive with
    // garbage in its upper half).
    fn prctl(option: libc::c_int, arg: libc::c_ulong) -> libc::c_int {
        // SAFETY: prctl with integer arguments only.
        unsafe {
            libc::prctl(
                option,
                arg,
                0 as libc::c_ulong,
                0 as libc::c_ulong,
                0 as libc::c_ulong,
            )
        }
    }
    let os_err = || io::Error::from_raw_os_error(errno_now());
    #[repr(C)]
    struct CapHeader {
        version: u32,
        pid: libc::c_int,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct CapData {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    // _LINUX_CAPABILITY_VERSION_3: two 32-bit words per set.
    let mut header = CapHeader {
        version: 0x2008_0522,
        pid: 0,
    };
    let mut data = [CapData {
        effective: 0,
        permitted: 0,
        inheritable: 0,
    }; 2];
    // SAFETY: capget with a valid header and two data words, as version 3 expects.
    if unsafe {
        libc::syscall(
            libc::SYS_capget,
            &mut header as *mut CapHeader,
            data.as_mut_ptr(),
        )
    } < 0
    {
        return Err(os_err());
    }
    // A process that is not root and holds no capability (`bake-agent job` run by hand as an
    // ordinary user) cannot empty its bounding set, and needs not: with no_new_privs, execve
    // gives it nothing (no setuid, no file capabilities), whatever the bounding set says.
    // SAFETY: getuid/geteuid have no preconditions.
    let unprivileged = data.iter().all(|d| d.permitted == 0)
        && unsafe { libc::getuid() } != 0
        && unsafe { libc::geteuid() } != 0;
    // Capabilities are numbered from 0; PR_CAPBSET_READ fails with EINVAL past the kernel's last.
    for cap in 0..64 {
        if unprivileged {
            break;
        }
        let held = prctl(libc::PR_CAPBSET_READ, cap);
        if held < 0 {
            break;
        }
        if held == 1 && prctl(libc::PR_CAPBSET_DROP, cap) < 0 {
            return Err(os_err());
        }
    }
    // PR_CAP_AMBIENT_CLEAR_ALL; EINVAL: a kernel without ambient capabilities (< 4.3).
    // SAFETY: prctl with integer arguments only.
    let rc = unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        )
    };
    if rc < 0 && errno_now() != libc::EINVAL {
        return Err(os_err());
    }
    // The inheritable set too: a root process keeps it across execve even with an empty
    // bounding set. Lowering it needs no privilege.
    if data.iter().any(|d| d.inheritable != 0) {
        for d in &mut data {
            d.inheritable = 0;
        }
        // SAFETY: capset with the header and data capget filled in.
        if unsafe {
            libc::syscall(
                libc::SYS_capset,
                &mut header as *mut CapHeader,
                data.as_ptr(),
            )
        } < 0
        {
            return Err(os_err());
        }
    }
    if prctl(libc::PR_SET_NO_NEW_PRIVS, 1) < 0 {
        return Err(os_err());
    }
    Ok(())
}

fn errno_now() -> i32 {
    // SAFETY: the calling thread's errno.
    unsafe { *libc::__errno_location() }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An ordinary user without capabilities (a job run by hand) cannot empty its bounding set
    /// and needs not: the command still starts, with no_new_privs.
    #[test]
    fn test_restrict_exec_without_privileges_sets_no_new_privs_only() {
        use std::os::unix::process::CommandExt;
        let mut cmd = std::process::Command::new("cat");
        cmd.arg("/proc/self/status").uid(65534).gid(65534);
        // SAFETY: restrict_exec makes raw system calls only.
        unsafe { cmd.pre_exec(restrict_exec) };
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.lines().any(|l| l == "NoNewPrivs:\t1"), "{text}");
        assert!(
            text.lines().any(|l| l == "CapEff:\t0000000000000000"),
            "{text}"
        );
    }
}
