//! Three network namespaces with a real middlebox between them: near (the client),
//! mid (the box) and far (the server).
//!
//! ```text
//!  near                    mid                          far
//!  eth0 10.111.1.2 ──veth── near 10.111.1.1
//!                           far  10.111.2.1 ──veth── eth0 10.111.2.2
//! ```
//!
//! The addresses are private (RFC 1918) and exist only inside these namespaces: no
//! interface, address, route, rule or sysctl is added on the host, so the ranges
//! cannot clash with the host's own networks, and two ranges rather than one make mid
//! a real router that the near–far traffic has to cross. near routes everything
//! through 10.111.1.1, far through 10.111.2.1, and mid forwards.
//!
//! Each namespace is a [`Netns`]: an `unshare --net` holder process; programs run
//! inside with `nsenter -t PID -n`; each veth pair is created inside one namespace
//! with its peer end placed straight into mid (`ip link add … peer name X netns PID`),
//! so it never appears on the host. The box in mid is one of:
//!
//! - [`Topology::router`]: plain forwarding;
//! - [`Topology::conntrack_router`]: forwarding through nftables with `ct state invalid
//!   drop`, `nf_conntrack_tcp_loose=0` and a short `nf_conntrack_tcp_timeout_established`
//!   (per-namespace sysctls, set in mid only): an idle flow is forgotten silently and
//!   its next segment dropped, like a cloud NAT;
//! - [`Topology::socat_proxy`]: socat listening on mid's near address, one per far port;
//! - [`Topology::haproxy`]: HAProxy in `mode tcp`, one per far port, with `timeout
//!   client` and `timeout server` set. HAProxy rather than nginx `stream`: it runs in
//!   the foreground from one config file (`-db -f`) and writes nothing else, while
//!   nginx wants a pid file, a log and temp directories, and the `stream` module is not
//!   in every nginx package.
//!
//! A proxy terminates TCP, so near dials mid's address; [`Topology::dial`] gives the
//! address to dial for a far port (and starts that port's proxy). Cleanup: dropping a
//! topology (also when a test panics) kills the proxies, then every other process
//! still inside the three namespaces (such as socat's forked children), then the
//! holders; the namespaces, their veths and nftables rules go with them, and the
//! temporary directory (HAProxy's configs, capture files) is removed.

use std::cell::RefCell;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use super::{Cmd, Netns, POLL, Proc, within};

/// near's address, on the near–mid link.
pub const NEAR: Ipv4Addr = Ipv4Addr::new(10, 111, 1, 2);
/// mid's address on the near–mid link: near's gateway, where proxies listen.
pub const MID_NEAR: Ipv4Addr = Ipv4Addr::new(10, 111, 1, 1);
/// mid's address on the mid–far link: far's gateway, and a proxy's source address.
pub const MID_FAR: Ipv4Addr = Ipv4Addr::new(10, 111, 2, 1);
/// far's address, on the mid–far link.
pub const FAR: Ipv4Addr = Ipv4Addr::new(10, 111, 2, 2);

/// How long a proxy gets to start listening.
const BOX_READY: Duration = Duration::from_secs(3);

/// One of the three namespaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Near,
    Mid,
    Far,
}

/// What runs in mid.
#[derive(Debug, Clone)]
enum MidBox {
    Router,
    Conntrack,
    Socat(Vec<String>),
    /// The idle timeout, and more lines for HAProxy's `defaults` section.
    Haproxy(Duration, Vec<String>),
}

/// near, mid and far, joined by veth pairs, with a box in mid. See the module header.
pub struct Topology {
    mid_box: MidBox,
    near: Netns,
    mid: Netns,
    far: Netns,
    /// Removed on drop: HAProxy's configs, capture files ([`Topology::file`]).
    dir: PathBuf,
    /// The proxies started so far, by far port.
    proxies: RefCell<Vec<(u16, Proc)>>,
}

impl Topology {
    /// Plain forwarding in mid: the direct path.
    pub fn router() -> Self {
        Self::build(MidBox::Router)
    }

    /// Forwarding through conntrack that forgets a flow idle for `timeout_s` seconds
    /// and drops its next segment (`ct state invalid drop`, `nf_conntrack_tcp_loose=0`,
    /// `nf_conntrack_tcp_timeout_established=timeout_s`, in mid only).
    pub fn conntrack_router(timeout_s: u32) -> Self {
        let topo = Self::build(MidBox::Conntrack);
        let script = "table inet middlebox {\n  chain forward {\n    type filter hook forward \
                      priority 0; ct state invalid drop;\n  }\n}\n";
        // nft reads the script from a file in the temporary directory.
        let rules = topo.dir.join("middlebox.nft");
        std::fs::write(&rules, script).expect("write the nftables script");
        topo.in_ns(Side::Mid, "nft", &["-f", &path_str(&rules)]);
        // The conntrack sysctls exist in mid once its rules use conntrack.
        topo.set_sysctl(Side::Mid, "net.netfilter.nf_conntrack_tcp_loose", "0");
        topo.set_sysctl(
            Side::Mid,
            "net.netfilter.nf_conntrack_tcp_timeout_established",
            &timeout_s.to_string(),
        );
        let loose = topo.sysctl(Side::Mid, "net.netfilter.nf_conntrack_tcp_loose");
        let established = topo.sysctl(
            Side::Mid,
            "net.netfilter.nf_conntrack_tcp_timeout_established",
        );
        assert_eq!(
            (loose.as_str(), established.as_str()),
            ("0", timeout_s.to_string().as_str()),
            "mid's conntrack sysctls read back"
        );
        topo
    }

    /// socat in mid: `socat OPTS TCP-LISTEN:PORT,bind=MID_NEAR,reuseaddr,fork
    /// TCP:FAR:PORT` for each far port [`Topology::dial`] is asked for (`opts` e.g.
    /// `["-T", "2"]`, an idle timeout).
    pub fn socat_proxy(opts: &[&str]) -> Self {
        Self::build(MidBox::Socat(
            opts.iter().map(|o| (*o).to_owned()).collect(),
        ))
    }

    /// HAProxy in mid (`mode tcp`, `timeout client` and `timeout server` = `timeout`,
    /// `timeout connect` 2 s), listening on MID_NEAR:PORT for each far port
    /// [`Topology::dial`] is asked for.
    pub fn haproxy(timeout: Duration) -> Self {
        Self::haproxy_with(timeout, &[])
    }

    /// [`Topology::haproxy`] with more lines in its `defaults` section, e.g.
    /// `option nolinger` (HAProxy then ends a connection with an RST right after
    /// its FIN).
    pub fn haproxy_with(timeout: Duration, options: &[&str]) -> Self {
        Self::build(MidBox::Haproxy(
            timeout,
            options.iter().map(|o| (*o).to_owned()).collect(),
        ))
    }

    fn build(mid_box: MidBox) -> Self {
        static COUNT: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "tcpbye-topology-{}-{}",
            std::process::id(),
            COUNT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        let topo = Self {
            mid_box,
            near: Netns::new(),
            mid: Netns::new(),
            far: Netns::new(),
            dir,
            proxies: RefCell::new(Vec::new()),
        };
        let mid_pid = topo.mid.pid().to_string();
        for (side, addr, gateway, mid_end) in [
            (Side::Near, NEAR, MID_NEAR, "near"),
            (Side::Far, FAR, MID_FAR, "far"),
        ] {
            topo.shell(
                side,
                &format!(
                    "ip link add eth0 type veth peer name {mid_end} netns {mid_pid} \
                     && ip addr add {addr}/24 dev eth0 && ip link set eth0 up \
                     && ip route add default via {gateway}"
                ),
            );
        }
        topo.shell(
            Side::Mid,
            &format!(
                "ip addr add {MID_NEAR}/24 dev near && ip link set near up \
                 && ip addr add {MID_FAR}/24 dev far && ip link set far up"
            ),
        );
        topo.set_sysctl(Side::Mid, "net.ipv4.ip_forward", "1");
        topo
    }

    /// `tcpbye ARGS` in near.
    pub fn near_tcpbye(&self, args: &[&str]) -> Cmd {
        self.near.tcpbye(args)
    }

    /// `tcpbye ARGS` in far.
    pub fn far_tcpbye(&self, args: &[&str]) -> Cmd {
        self.far.tcpbye(args)
    }

    /// `PROGRAM ARGS` in `side`.
    pub fn program(&self, side: Side, program: &str, args: &[&str]) -> Cmd {
        self.ns(side).program(program, args)
    }

    /// Starts `tcpbye serve FAR:0 ARGS` in far and waits (at most 5 s) for its
    /// `listening on` line; returns it and its port.
    pub fn serve_far(&self, args: &[&str]) -> (Proc, u16) {
        let listen = SocketAddrV4::new(FAR, 0).to_string();
        let mut all = vec!["serve", listen.as_str()];
        all.extend_from_slice(args);
        let mut serve = self.far_tcpbye(&all).spawn();
        let port = serve.listening_by(within(5)).port();
        (serve, port)
    }

    /// The address near dials to reach far's `port`: far's own through a router, mid's
    /// near address through a proxy. The first call for a port starts its proxy and
    /// waits (at most 3 s) until it listens; later calls reuse it.
    pub fn dial(&self, port: u16) -> SocketAddr {
        match self.mid_box {
            MidBox::Router | MidBox::Conntrack => SocketAddrV4::new(FAR, port).into(),
            MidBox::Socat(_) | MidBox::Haproxy(..) => {
                if !self.proxies.borrow().iter().any(|(p, _)| *p == port) {
                    let proxy = self.start_proxy(port);
                    self.proxies.borrow_mut().push((port, proxy));
                }
                SocketAddrV4::new(MID_NEAR, port).into()
            }
        }
    }

    /// The process id of `side`'s holder (for `nsenter -t PID -n`, /proc/PID/net/).
    pub fn pid(&self, side: Side) -> u32 {
        self.ns(side).pid()
    }

    /// `side`'s namespace identity, `net:[INODE]`.
    pub fn inode(&self, side: Side) -> &str {
        &self.ns(side).inode
    }

    /// A path in the topology's temporary directory (removed on drop), e.g. for
    /// `--pcap`.
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The temporary directory itself.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A sysctl's value as read inside `side`: /proc/sys/net shows the namespace of
    /// the process that reads it (no `sysctl` program needed).
    pub fn sysctl(&self, side: Side, key: &str) -> String {
        let out = self.in_ns(side, "cat", &[&sysctl_path(key)]);
        out.trim().to_owned()
    }

    /// Sets a per-namespace sysctl inside `side`.
    fn set_sysctl(&self, side: Side, key: &str, value: &str) {
        self.shell(side, &format!("echo {value} > {}", sysctl_path(key)));
    }

    /// mid's conntrack table, one entry a line (/proc/PID/net/nf_conntrack, which is
    /// per namespace), or `None` when this kernel has no such file.
    pub fn conntrack_entries(&self) -> Option<Vec<String>> {
        let path = format!("/proc/{}/net/nf_conntrack", self.mid.pid());
        let table = std::fs::read_to_string(path).ok()?;
        Some(table.lines().map(str::to_owned).collect())
    }

    /// The output of the proxy serving far's `port`, so far (for messages).
    pub fn proxy_dump(&self, port: u16) -> String {
        self.proxies
            .borrow()
            .iter()
            .find(|(p, _)| *p == port)
            .map_or_else(|| "no proxy".to_owned(), |(_, proxy)| proxy.dump())
    }

    fn ns(&self, side: Side) -> &Netns {
        match side {
            Side::Near => &self.near,
            Side::Mid => &self.mid,
            Side::Far => &self.far,
        }
    }

    /// Runs `PROGRAM ARGS` in `side` to its end; it must exit 0. Its stdout.
    fn in_ns(&self, side: Side, program: &str, args: &[&str]) -> String {
        let done = self.program(side, program, args).run();
        assert_eq!(done.code, Some(0), "in {side:?}: {}", done.dump());
        done.stdout
    }

    fn shell(&self, side: Side, script: &str) {
        self.in_ns(side, "sh", &["-c", script]);
    }

    /// Starts the proxy for far's `port` and waits until it listens on MID_NEAR:port.
    fn start_proxy(&self, port: u16) -> Proc {
        let listen = SocketAddrV4::new(MID_NEAR, port);
        let target = SocketAddrV4::new(FAR, port);
        let mut proxy = match &self.mid_box {
            MidBox::Socat(opts) => {
                let mut args: Vec<String> = opts.clone();
                args.push(format!("TCP-LISTEN:{port},bind={MID_NEAR},reuseaddr,fork"));
                args.push(format!("TCP:{target}"));
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                self.program(Side::Mid, "socat", &args).spawn()
            }
            MidBox::Haproxy(timeout, options) => {
                let ms = timeout.as_millis();
                let more: String = options.iter().map(|o| format!("  {o}\n")).collect();
                let config = format!(
                    "global\n  maxconn 1024\ndefaults\n  mode tcp\n  timeout connect 2s\n  \
                     timeout client {ms}ms\n  timeout server {ms}ms\n{more}listen box\n  \
                     bind {listen}\n  server far {target}\n"
                );
                let path = self.dir.join(format!("haproxy-{port}.cfg"));
                std::fs::write(&path, config)
                    .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
                self.program(Side::Mid, "haproxy", &["-db", "-f", &path_str(&path)])
                    .spawn()
            }
            MidBox::Router | MidBox::Conntrack => unreachable!("a router has no proxy"),
        };
        let deadline = Instant::now() + BOX_READY;
        loop {
            if proxy.exited().is_some() {
                let done = proxy.finish_by(Instant::now() + Duration::from_secs(1));
                panic!("the proxy in mid exited before listening\n{}", done.dump());
            }
            if listens(self.mid.pid(), listen) {
                return proxy;
            }
            assert!(
                Instant::now() < deadline,
                "the proxy in mid is not listening on {listen} after {BOX_READY:?}\n{}",
                proxy.dump()
            );
            std::thread::sleep(POLL);
        }
    }

    /// Kills every process still inside one of the three namespaces (a forked proxy
    /// child, a program a test left running), except the holders, and reaps what it
    /// can; bounded in time.
    fn kill_strays(&self) {
        let holders = [self.near.pid(), self.mid.pid(), self.far.pid()];
        let inodes = [&self.near.inode, &self.mid.inode, &self.far.inode];
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            let strays: Vec<u32> = processes_in(&inodes)
                .into_iter()
                .filter(|pid| !holders.contains(pid))
                .collect();
            if strays.is_empty() || Instant::now() >= deadline {
                return;
            }
            for pid in strays {
                let pid = nix::unistd::Pid::from_raw(pid as i32);
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            }
            std::thread::sleep(POLL);
        }
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        // The proxies are this process's children: killed and reaped by their Proc.
        self.proxies.borrow_mut().clear();
        self.kill_strays();
        let _ = std::fs::remove_dir_all(&self.dir);
        // The holders go with the fields, and with them the namespaces.
    }
}

/// The processes whose network namespace is one of `inodes` (`net:[INODE]`).
pub fn processes_in(inodes: &[&String]) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_link(format!("/proc/{pid}/ns/net"))
                .is_ok_and(|link| inodes.iter().any(|i| link.to_string_lossy() == i.as_str()))
        })
        .collect()
}

/// Whether a LISTEN socket on `addr` exists in the namespace of process `pid`
/// (/proc/PID/net/tcp shows that process's namespace). No probe connection: a proxy
/// would forward it to the server under test.
fn listens(pid: u32, addr: SocketAddrV4) -> bool {
    let table = std::fs::read_to_string(format!("/proc/{pid}/net/tcp")).unwrap_or_default();
    let local = format!(
        "{:08X}:{:04X}",
        u32::from_le_bytes(addr.ip().octets()),
        addr.port()
    );
    table.lines().skip(1).any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // sl local rem st …
        fields.len() > 3 && fields[1] == local && fields[3] == "0A"
    })
}

/// `/proc/sys/net/ipv4/ip_forward` for `net.ipv4.ip_forward`.
fn sysctl_path(key: &str) -> String {
    format!("/proc/sys/{}", key.replace('.', "/"))
}

fn path_str(path: &Path) -> String {
    path.to_str()
        .unwrap_or_else(|| panic!("{} is not UTF-8", path.display()))
        .to_owned()
}
