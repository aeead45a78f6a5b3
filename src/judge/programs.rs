//! The settings well-known programs offer for noticing a dead peer, in their own
//! words: `check`'s advice names the program and the setting to change instead of
//! socket options it cannot set. One entry per program; each has a test.

use crate::vocab::CloseMode;

/// What one program offers.
#[derive(Debug, PartialEq, Eq)]
pub struct Program {
    /// As the advice names it.
    pub name: &'static str,
    /// Its settings for TCP keepalive on the connections it accepts or makes;
    /// `None`: it has none.
    pub keepalive: Option<&'static str>,
    /// Its own timeout that ends a connection whose peer fell silent.
    pub idle_timeout: Option<&'static str>,
    /// Its setting for TCP_USER_TIMEOUT (data in flight unacknowledged).
    pub user_timeout: Option<&'static str>,
}

/// The programs tcpbye knows, by the name `/proc/PID/comm` shows (a prefix
/// where the name carries a version, like `python3.12`).
const PROGRAMS: &[(&str, Program)] = &[
    (
        "redis-server",
        Program {
            name: "redis",
            keepalive: Some(
                "`tcp-keepalive 30` in redis.conf (redis then sets TCP_KEEPIDLE=30s, TCP_KEEPINTVL=10s, TCP_KEEPCNT=3: ≈60s)",
            ),
            idle_timeout: Some("`timeout 60` closes a client idle for 60s"),
            user_timeout: None,
        },
    ),
    (
        "nginx",
        Program {
            name: "nginx",
            keepalive: Some("`listen … so_keepalive=30s:5s:3` (≈45s)"),
            idle_timeout: Some(
                "`client_header_timeout`, `client_body_timeout`, `send_timeout` and `keepalive_timeout` (60s, 60s, 60s, 75s by default) close a silent client",
            ),
            user_timeout: None,
        },
    ),
    (
        "postgres",
        Program {
            name: "PostgreSQL",
            keepalive: Some(
                "`tcp_keepalives_idle = 30`, `tcp_keepalives_interval = 5`, `tcp_keepalives_count = 3` in postgresql.conf (≈45s)",
            ),
            idle_timeout: Some(
                "`idle_session_timeout` and `idle_in_transaction_session_timeout` end idle sessions (off by default)",
            ),
            user_timeout: Some("`tcp_user_timeout = 30000` (ms)"),
        },
    ),
    (
        "memcached",
        Program {
            name: "memcached",
            keepalive: None,
            idle_timeout: Some("`-o idle_timeout=60` closes a client idle for 60s"),
            user_timeout: None,
        },
    ),
    (
        "mosquitto",
        Program {
            name: "mosquitto",
            keepalive: None,
            idle_timeout: Some(
                "`max_keepalive 60`: a client silent for 1.5 × its MQTT keepalive is disconnected",
            ),
            user_timeout: None,
        },
    ),
    (
        "haproxy",
        Program {
            name: "HAProxy",
            keepalive: Some(
                "`option clitcpka` with `clitcpka-idle 30s`, `clitcpka-intvl 5s`, `clitcpka-cnt 3` (≈45s)",
            ),
            idle_timeout: Some("`timeout client 30s`"),
            user_timeout: Some("`bind … tcp-ut 30s`"),
        },
    ),
    (
        "node",
        Program {
            name: "Node.js",
            keepalive: Some(
                "`socket.setKeepAlive(true, 30000)` (only the idle time is settable: libuv then probes every 1s, 10 times: ≈40s)",
            ),
            idle_timeout: Some(
                "`socket.setTimeout(ms)` (or `server.timeout`) and end the socket on 'timeout'",
            ),
            user_timeout: None,
        },
    ),
    (
        "java",
        Program {
            name: "Java",
            keepalive: Some(
                "`socket.setKeepAlive(true)` and `setOption(ExtendedSocketOptions.TCP_KEEPIDLE, 30)`, `TCP_KEEPINTERVAL, 5`, `TCP_KEEPCOUNT, 3` (≈45s)",
            ),
            idle_timeout: Some("`socket.setSoTimeout(ms)`: a read that waits longer throws"),
            user_timeout: None,
        },
    ),
    (
        "python",
        Program {
            name: "Python",
            keepalive: Some(
                "`sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)` with `socket.TCP_KEEPIDLE` 30, `TCP_KEEPINTVL` 5, `TCP_KEEPCNT` 3 (≈45s)",
            ),
            idle_timeout: Some("`sock.settimeout(seconds)`: a recv that waits longer raises"),
            user_timeout: Some("`socket.TCP_USER_TIMEOUT` 30000 (ms)"),
        },
    ),
];

/// A Go program: found by its executable, not its name.
const GO: Program = Program {
    name: "Go",
    keepalive: Some(
        "`net.KeepAliveConfig{Enable: true, Idle: 30 * time.Second, Interval: 5 * time.Second, Count: 3}` on the Dialer or ListenConfig (Go 1.23; ≈45s)",
    ),
    idle_timeout: Some("`conn.SetReadDeadline(time.Now().Add(d))` before each read"),
    user_timeout: None,
};

/// The entry for a process named `comm` (`go`: its executable is a Go binary).
pub fn lookup(comm: &str, go: bool) -> Option<&'static Program> {
    if go {
        return Some(&GO);
    }
    PROGRAMS
        .iter()
        .find(|(name, _)| comm == *name || (*name == "python" && is_python(comm)))
        .map(|(_, program)| program)
}

/// `python`, `python3`, `python3.12`.
fn is_python(comm: &str) -> bool {
    comm.strip_prefix("python")
        .is_some_and(|v| v.chars().all(|c| c.is_ascii_digit() || c == '.'))
}

impl Program {
    /// The advice for an ending the program did not notice, in its own settings;
    /// `None` when it offers nothing for this ending.
    pub fn advice(&self, mode: CloseMode, keepalive_on: bool, pid: Option<u32>) -> Option<String> {
        let name = match pid {
            Some(pid) => format!("{} (pid {pid})", self.name),
            None => self.name.to_owned(),
        };
        let in_flight = self
            .user_timeout
            .map(|ut| format!(", plus {ut} for data in flight"))
            .unwrap_or_default();
        match mode {
            CloseMode::Drop | CloseMode::Reboot => match (self.keepalive, self.idle_timeout) {
                (Some(ka), idle) => Some(format!(
                    "{name}: {} {ka}{in_flight}{}",
                    if keepalive_on { "shorten its keepalive:" } else { "turn on keepalive:" },
                    idle.map(|i| format!("; or its own timeout: {i}"))
                        .unwrap_or_default()
                )),
                (None, Some(idle)) => Some(format!(
                    "{name} has no keepalive setting; its own timeout ends silent clients: {idle}"
                )),
                (None, None) => None,
            },
            CloseMode::Hang => self.idle_timeout.map(|idle| {
                format!(
                    "{name}: keepalive cannot see a hung peer; its own timeout can: {idle}{in_flight}"
                )
            }),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn advice(comm: &str, mode: CloseMode) -> String {
        lookup(comm, false)
            .unwrap_or_else(|| panic!("{comm} is known"))
            .advice(mode, false, None)
            .unwrap_or_else(|| panic!("{comm}: advice for {mode}"))
    }

    #[test]
    fn redis_is_told_its_tcp_keepalive_and_timeout() {
        let a = advice("redis-server", CloseMode::Drop);
        assert!(
            a.starts_with("redis: turn on keepalive: `tcp-keepalive 30`"),
            "{a}"
        );
        assert!(a.contains("`timeout 60`"), "{a}");
        assert!(advice("redis-server", CloseMode::Hang).contains("`timeout 60`"));
    }

    #[test]
    fn nginx_is_told_so_keepalive_and_its_timeouts() {
        let a = advice("nginx", CloseMode::Reboot);
        assert!(a.contains("so_keepalive=30s:5s:3"), "{a}");
        assert!(advice("nginx", CloseMode::Hang).contains("client_header_timeout"));
    }

    #[test]
    fn postgres_is_told_tcp_keepalives_and_tcp_user_timeout() {
        let a = advice("postgres", CloseMode::Drop);
        assert!(a.contains("tcp_keepalives_idle = 30"), "{a}");
        assert!(a.contains("tcp_user_timeout = 30000"), "{a}");
        assert!(advice("postgres", CloseMode::Hang).contains("idle_session_timeout"));
    }

    #[test]
    fn memcached_has_only_its_idle_timeout() {
        let a = advice("memcached", CloseMode::Drop);
        assert!(a.starts_with("memcached has no keepalive setting"), "{a}");
        assert!(a.contains("idle_timeout=60"), "{a}");
    }

    #[test]
    fn mosquitto_is_told_max_keepalive() {
        assert!(advice("mosquitto", CloseMode::Drop).contains("max_keepalive 60"));
        assert!(advice("mosquitto", CloseMode::Hang).contains("max_keepalive 60"));
    }

    #[test]
    fn haproxy_is_told_clitcpka_timeout_client_and_tcp_ut() {
        let a = advice("haproxy", CloseMode::Drop);
        assert!(a.contains("option clitcpka"), "{a}");
        assert!(a.contains("tcp-ut 30s"), "{a}");
        assert!(a.contains("timeout client 30s"), "{a}");
    }

    #[test]
    fn node_is_told_that_only_the_idle_time_is_settable() {
        let a = advice("node", CloseMode::Drop);
        assert!(a.contains("setKeepAlive(true, 30000)"), "{a}");
        assert!(a.contains("only the idle time is settable"), "{a}");
    }

    #[test]
    fn java_python_and_go_are_told_their_socket_options() {
        assert!(advice("java", CloseMode::Drop).contains("ExtendedSocketOptions.TCP_KEEPIDLE"));
        let py = advice("python3.12", CloseMode::Drop);
        assert!(py.contains("socket.TCP_KEEPIDLE"), "{py}");
        assert!(py.contains("TCP_USER_TIMEOUT"), "{py}");
        let go = lookup("myservice", true)
            .and_then(|p| p.advice(CloseMode::Drop, true, Some(7)))
            .expect("go advice");
        assert!(
            go.starts_with("Go (pid 7): shorten its keepalive: `net.KeepAliveConfig"),
            "{go}"
        );
    }

    #[test]
    fn an_unknown_program_has_no_entry() {
        assert_eq!(lookup("myserver", false), None);
        assert_eq!(lookup("pythonista", false), None);
        assert_eq!(lookup("python3", false).map(|p| p.name), Some("Python"));
        // Ends the program sees (fin, half, rst) are answered by reading the socket.
        let redis = lookup("redis-server", false).expect("redis");
        assert_eq!(redis.advice(CloseMode::Fin, false, None), None);
    }
}
