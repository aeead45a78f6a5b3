//! Work done inside another process's network namespace: a thread of its own
//! enters it (`setns(2)`), does the work and ends, so no other thread of tcpbye
//! ever changes namespace.

use std::fs::File;
use std::io;
use std::os::unix::fs::MetadataExt;

use nix::sched::{CloneFlags, setns};

/// Runs `work` in the network namespace of process `pid` (`/proc/PID/ns/net`):
/// on this thread when that is this thread's own, else on a thread that enters
/// it and ends with `work`. The second value says whether another namespace was
/// entered. Entering one needs `CAP_SYS_ADMIN` over it (`EPERM` otherwise);
/// opening the link needs the rights ptrace would (`EACCES`), and a process that
/// is gone gives `ENOENT`.
pub fn in_netns_of<T: Send>(pid: u32, work: impl FnOnce() -> T + Send) -> io::Result<(T, bool)> {
    let target = File::open(format!("/proc/{pid}/ns/net"))?;
    let own = std::fs::metadata("/proc/thread-self/ns/net")?;
    let theirs = target.metadata()?;
    if (own.dev(), own.ino()) == (theirs.dev(), theirs.ino()) {
        return Ok((work(), false));
    }
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                setns(&target, CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
                Ok((work(), true))
            })
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the thread in the namespace panicked")))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_namespace_runs_on_this_thread() {
        let here = std::thread::current().id();
        let (ran_on, entered) = in_netns_of(std::process::id(), || std::thread::current().id())
            .expect("its own namespace");
        assert_eq!((ran_on, entered), (here, false));
    }

    #[test]
    fn a_process_that_is_gone_is_enoent() {
        // pid_max is at most 2^22: no process has this number.
        let err = in_netns_of(u32::MAX - 1, || ()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }
}
