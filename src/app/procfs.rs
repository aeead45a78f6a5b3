//! What /proc tells of processes' descriptors: which sockets a process holds,
//! and which processes hold a socket (`/proc/PID/fd/N` → `socket:[INODE]`).

use std::collections::{HashMap, HashSet};
use std::io;
use std::path::Path;

/// The inode of a descriptor's link target `socket:[INODE]`; `None` for any other file.
pub fn socket_inode(link: &Path) -> Option<u32> {
    link.to_str()?
        .strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// Every socket descriptor of process `pid`: (descriptor number, socket inode),
/// lowest descriptor first. `ENOENT` when there is no such process, `EACCES`
/// when its descriptors are not this user's to read (another user's process,
/// without root or CAP_SYS_PTRACE). A descriptor closed while it is read is left out.
pub fn socket_fds(pid: u32) -> io::Result<Vec<(i32, u32)>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd"))? {
        let entry = entry?;
        let Some(fd) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        if let Some(inode) = std::fs::read_link(entry.path())
            .ok()
            .and_then(|link| socket_inode(&link))
        {
            found.push((fd, inode));
        }
    }
    found.sort_unstable();
    Ok(found)
}

/// The first process and descriptor number found holding socket `inode`.
pub fn first_holder(inode: u32) -> Option<(u32, i32)> {
    let procs = std::fs::read_dir("/proc").ok()?;
    let own = std::process::id();
    procs
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()))
        .filter(|pid| *pid != own)
        .find_map(|pid| descriptor_of(pid, inode))
}

/// The descriptor number by which process `pid` holds socket `inode`.
pub fn descriptor_of(pid: u32, inode: u32) -> Option<(u32, i32)> {
    socket_fds(pid)
        .ok()?
        .into_iter()
        .find(|(_, i)| *i == inode)
        .map(|(fd, _)| (pid, fd))
}

/// Whether process `pid`'s descriptor `fd` still is socket `inode`: one readlink.
pub fn holds(pid: u32, fd: i32, inode: u32) -> bool {
    std::fs::read_link(format!("/proc/{pid}/fd/{fd}"))
        .is_ok_and(|link| socket_inode(&link) == Some(inode))
}

/// The children of every thread of process `pid` (`/proc/PID/task/*/children`).
pub fn children(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("children")).ok())
        .flat_map(|list| {
            list.split_whitespace()
                .filter_map(|n| n.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

/// A process's name, as `ps` shows it (`/proc/PID/comm`).
pub fn comm(pid: u32) -> Option<String> {
    let name = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    Some(name.trim_end().to_owned()).filter(|n| !n.is_empty())
}

/// Which processes hold a descriptor of each socket inode (`/proc/PID/fd/N` →
/// `socket:[INODE]`), looking at `only` these processes when given, else at all;
/// processes whose fds cannot be read are skipped.
pub fn holders(inodes: &HashSet<u32>, only: Option<&[u32]>) -> HashMap<u32, Vec<u32>> {
    let mut found: HashMap<u32, Vec<u32>> = HashMap::new();
    let pids: Vec<u32> = match only {
        Some(pids) => pids.to_vec(),
        None => match std::fs::read_dir("/proc") {
            Ok(procs) => procs
                .flatten()
                .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok()))
                .collect(),
            Err(_) => return found,
        },
    };
    for pid in pids {
        let Ok(fds) = socket_fds(pid) else {
            continue;
        };
        for (_, inode) in fds.into_iter().filter(|(_, i)| inodes.contains(i)) {
            let pids = found.entry(inode).or_default();
            if !pids.contains(&pid) {
                pids.push(pid);
            }
        }
    }
    found
}
