//! The clap value parsers: text from the command line into typed values, each
//! with a one-line error that says what was expected.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use super::{
    DEFAULT_HOST, DEFAULT_PORT, Heartbeat, KeepAlive, NoticeLimits, PeerFilter, Request, Target,
};
use crate::vocab::CloseMode;

/// Parses `HOST:PORT`, `[V6]:PORT`, `:PORT`, `PORT`, or a bare host or IP (default
/// port). Host names are kept as names: they are resolved when the command runs,
/// so that a failed lookup is a runtime error, and every address is tried.
pub fn parse_addr(text: &str) -> Result<Target, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("empty address".into());
    }
    if let Some((scheme, rest)) = text.split_once("://") {
        return Err(format!(
            "'{text}': tcpbye takes HOST:PORT without a scheme: write '{rest}', not '{scheme}://'"
        ));
    }
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(Target::Addr(addr));
    }
    if let Some(inner) = text.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
        return match inner.parse::<IpAddr>() {
            Ok(ip) => Ok(Target::Addr(SocketAddr::new(ip, DEFAULT_PORT))),
            Err(_) => Err(format!("'{text}': '{inner}' is not an IP address")),
        };
    }
    if let Ok(ip) = text.parse::<IpAddr>() {
        // `::1:80` is a valid address, but most likely meant [::1]:80.
        if let Some((head, last)) = text.rsplit_once(':') {
            let port_like = !last.is_empty() && last.bytes().all(|b| b.is_ascii_digit());
            if ip.is_ipv6() && port_like && head.parse::<IpAddr>().is_ok() {
                return Err(format!(
                    "'{text}' is ambiguous: write [{head}]:{last} for port {last} of {head}, or [{text}] for the address {text}"
                ));
            }
        }
        return Ok(Target::Addr(SocketAddr::new(ip, DEFAULT_PORT)));
    }
    if let Some(port) = text.strip_prefix(':') {
        return Ok(Target::Addr(SocketAddr::new(
            DEFAULT_HOST,
            parse_port(port)?,
        )));
    }
    if text.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(Target::Addr(SocketAddr::new(
            DEFAULT_HOST,
            parse_port(text)?,
        )));
    }
    let (host, port) = match text.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => (host, parse_port(port)?),
        Some(_) => return Err(format!("'{text}': write IPv6 addresses as [ADDR]:PORT")),
        None => (text, DEFAULT_PORT),
    };
    let name_like = host
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
    if host.is_empty() || !name_like {
        return Err(format!("'{host}' is not a host name or an IP address"));
    }
    Ok(Target::Host {
        host: host.to_owned(),
        port,
    })
}

fn parse_port(text: &str) -> Result<u16, String> {
    text.parse::<u16>()
        .map_err(|_| format!("'{text}' is not a port (0-65535)"))
}

/// The longest any duration flag may be. Longer ones are typos or tests of the
/// parser, and deadlines past it would overflow the monotonic clock.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// Parses a duration such as `250ms`, `1s`, `1.5s`, `2m`, `1h`; a bare number is
/// seconds. At most [`MAX_DURATION`].
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let too_long = || format!("'{text}' is too long: a duration may be at most 365 days");
    let secs = text
        .parse::<f64>()
        .ok()
        .or_else(|| text.strip_suffix('s').and_then(|n| n.parse::<f64>().ok()));
    let duration = match secs {
        Some(secs) if secs < 0.0 => return Err(format!("'{text}' is negative")),
        Some(secs) if secs > MAX_DURATION.as_secs_f64() => return Err(too_long()),
        Some(secs) => Duration::try_from_secs_f64(secs)
            .map_err(|_| format!("'{text}' is not a duration; try 500ms, 1.5s or 2m"))?,
        None => humantime::parse_duration(text).map_err(|e| match e {
            humantime::DurationError::NumberOverflow => too_long(),
            e => format!("'{text}' is not a duration ({e}); try 500ms, 1.5s or 2m"),
        })?,
    };
    if duration > MAX_DURATION {
        return Err(too_long());
    }
    Ok(duration)
}

/// The shortest period of anything tcpbye repeats (`--send-every`, `--heartbeat`,
/// `path`'s idle periods): shorter ones are busy write loops, not a setting.
pub const PERIOD_MIN: Duration = Duration::from_millis(1);

/// Parses a period: a duration of at least [`PERIOD_MIN`].
pub fn parse_period(text: &str) -> Result<Duration, String> {
    let period = parse_duration(text)?;
    if period < PERIOD_MIN {
        return Err("must be at least 1ms (a shorter period is a busy write loop)".into());
    }
    Ok(period)
}

/// Parses a rate in connections per second (`500`, `0.5`).
pub fn parse_rate(text: &str) -> Result<f64, String> {
    text.trim()
        .parse::<f64>()
        .ok()
        .filter(|r| r.is_finite() && *r >= 0.001 && *r <= 1e7)
        .ok_or_else(|| format!("'{text}' is not a rate (connections per second, e.g. 500)"))
}

/// Parses `IDLE,INTVL,CNT` (e.g. `1s,1s,3`); the kernel takes whole seconds.
pub fn parse_keepalive(text: &str) -> Result<KeepAlive, String> {
    let parts: Vec<&str> = text.split(',').collect();
    let [idle, interval, count] = parts[..] else {
        return Err(format!("'{text}': expected IDLE,INTVL,CNT such as 1s,1s,3"));
    };
    let whole_secs = |part: &str, what: &str| -> Result<Duration, String> {
        let d = parse_duration(part)?;
        if d.subsec_nanos() != 0 || d.is_zero() || d.as_secs() > 32767 {
            return Err(format!(
                "keepalive {what} '{part}' must be whole seconds from 1s to 32767s (the kernel's unit)"
            ));
        }
        Ok(d)
    };
    let count: u32 = count
        .trim()
        .parse()
        .ok()
        .filter(|c| (1..=127).contains(c))
        .ok_or_else(|| format!("keepalive count '{count}' must be 1 to 127"))?;
    Ok(KeepAlive {
        idle: whole_secs(idle, "idle")?,
        interval: whole_secs(interval, "interval")?,
        count,
    })
}

/// Parses `INTERVAL,MISSES` (e.g. `200ms,3`).
pub fn parse_heartbeat(text: &str) -> Result<Heartbeat, String> {
    let Some((interval, misses)) = text.split_once(',') else {
        return Err(format!(
            "'{text}': expected INTERVAL,MISSES such as 200ms,3"
        ));
    };
    let interval = parse_duration(interval)?;
    if interval < PERIOD_MIN {
        return Err("heartbeat interval must be at least 1ms".into());
    }
    let misses = misses
        .trim()
        .parse::<u32>()
        .ok()
        .filter(|m| *m >= 1)
        .ok_or_else(|| format!("heartbeat misses '{misses}' must be a whole number ≥ 1"))?;
    Ok(Heartbeat { interval, misses })
}

/// Parses a byte count: `100`, `4k`, `64KiB`, `1M`.
pub fn parse_bytes(text: &str) -> Result<usize, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let n: usize = digits
        .parse()
        .map_err(|_| format!("'{text}' is not a byte count (e.g. 100, 4k, 1M)"))?;
    let scale: usize = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        _ => return Err(format!("'{text}': unknown unit; use k or M")),
    };
    n.checked_mul(scale)
        .filter(|n| *n <= 1 << 30)
        .ok_or_else(|| format!("'{text}' is more than 1 GiB"))
}

/// Parses a string with escapes into bytes: `\r`, `\n`, `\t`, `\0`, `\\`, `\xHH`
/// (e.g. `PING\r\n`, `GET / HTTP/1.1\r\nHost: x\r\n\r\n`).
pub fn parse_escapes(text: &str) -> Result<Request, String> {
    let mut out = Vec::with_capacity(text.len());
    let mut bytes = text.bytes();
    while let Some(b) = bytes.next() {
        if b != b'\\' {
            out.push(b);
            continue;
        }
        let unknown = |c: Option<u8>| {
            format!(
                "'{text}': unknown escape '\\{}'; use \\r \\n \\t \\0 \\\\ or \\xHH",
                c.map_or(String::new(), |c| char::from(c).to_string())
            )
        };
        match bytes.next() {
            Some(b'r') => out.push(b'\r'),
            Some(b'n') => out.push(b'\n'),
            Some(b't') => out.push(b'\t'),
            Some(b'0') => out.push(0),
            Some(b'\\') => out.push(b'\\'),
            Some(b'x') => {
                let hex: Vec<u8> = bytes.by_ref().take(2).collect();
                let byte = std::str::from_utf8(&hex)
                    .ok()
                    .filter(|h| h.len() == 2)
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| format!("'{text}': \\x needs two hex digits, e.g. \\x00"))?;
                out.push(byte);
            }
            other => return Err(unknown(other)),
        }
    }
    if out.is_empty() {
        return Err("the request is empty".into());
    }
    Ok(Request(out))
}

/// Parses `--expect-noticed-within`: one duration for every mode judged (`5s`),
/// or per mode (`drop=60s,fin=1s`).
pub fn parse_notice_limits(text: &str) -> Result<NoticeLimits, String> {
    let text = text.trim();
    if !text.contains('=') {
        return Ok(NoticeLimits {
            every: Some(parse_duration(text)?),
            per_mode: Vec::new(),
        });
    }
    let mut per_mode = Vec::new();
    for part in text.split(',') {
        let (mode, dur) = part.split_once('=').ok_or_else(|| {
            format!("'{part}': expected MODE=DUR, e.g. drop=60s (or one DUR for every mode)")
        })?;
        let mode = CloseMode::ALL
            .iter()
            .copied()
            .find(|m| m.name() == mode.trim())
            .ok_or_else(|| format!("'{mode}' is not a close mode"))?;
        per_mode.push((mode, parse_duration(dur)?));
    }
    Ok(NoticeLimits {
        every: None,
        per_mode,
    })
}

/// `--peer`: `IP:PORT`, `[V6]:PORT`, or an IP alone (any port).
pub fn parse_peer(text: &str) -> Result<PeerFilter, String> {
    let text = text.trim();
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(PeerFilter {
            ip: addr.ip(),
            port: Some(addr.port()),
        });
    }
    let bare = text
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .unwrap_or(text);
    bare.parse::<IpAddr>()
        .map(|ip| PeerFilter { ip, port: None })
        .map_err(|_| format!("'{text}': a peer is IP:PORT, [V6]:PORT or an IP address"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_have_a_floor_of_one_millisecond() {
        assert_eq!(parse_period("1ms"), Ok(Duration::from_millis(1)));
        assert_eq!(parse_period("0.001"), Ok(Duration::from_millis(1)));
        assert_eq!(parse_period(" 2s "), Ok(Duration::from_secs(2)));
        for short in ["0", "0s", "0.0000001", "999us", "0.5ms"] {
            let err = parse_period(short).unwrap_err();
            assert!(err.contains("at least 1ms"), "{short}: {err}");
        }
        assert!(parse_period("soon").unwrap_err().contains("not a duration"));
        assert!(parse_period("-1s").unwrap_err().contains("negative"));
    }

    #[test]
    fn addresses() {
        let ok = |s: &str| match parse_addr(s).unwrap() {
            Target::Addr(addr) => addr,
            host => panic!("{s}: {host:?}"),
        };
        assert_eq!(ok("127.0.0.1:80"), "127.0.0.1:80".parse().unwrap());
        assert_eq!(ok("[::1]:9"), "[::1]:9".parse().unwrap());
        assert_eq!(ok(":81"), "127.0.0.1:81".parse().unwrap());
        assert_eq!(ok("82"), "127.0.0.1:82".parse().unwrap());
        let v6 = SocketAddr::new("::1".parse().unwrap(), DEFAULT_PORT);
        assert_eq!(ok("::1"), v6);
        assert_eq!(ok("[::1]"), v6);
        assert_eq!(
            ok("127.0.0.2"),
            SocketAddr::new("127.0.0.2".parse().unwrap(), DEFAULT_PORT)
        );
        assert_eq!(
            parse_addr("localhost:83"),
            Ok(Target::Host {
                host: "localhost".into(),
                port: 83
            })
        );
        for bad in [
            "",
            ":",
            "70000",
            "1.2.3.4:x",
            "fe80::1:99999x",
            ":-1",
            "a b:80",
        ] {
            assert!(parse_addr(bad).is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn ambiguous_and_scheme_addresses_say_what_to_write() {
        let err = parse_addr("::1:80").unwrap_err();
        assert!(err.contains("[::1]:80"), "{err}");
        let err = parse_addr("tcp://127.0.0.1:80").unwrap_err();
        assert!(
            err.contains("'127.0.0.1:80'") && !err.contains("IPv6"),
            "{err}"
        );
        // Not ambiguous: the part before the last colon is no address on its own.
        assert!(parse_addr("2001:db8::1").is_ok());
    }

    #[test]
    fn durations() {
        let ok = |s: &str| parse_duration(s).unwrap();
        assert_eq!(ok("250ms"), Duration::from_millis(250));
        assert_eq!(ok("1.5s"), Duration::from_millis(1500));
        assert_eq!(ok("2"), Duration::from_secs(2));
        assert_eq!(ok("2m"), Duration::from_secs(120));
        assert_eq!(ok("100us"), Duration::from_micros(100));
        for bad in ["", "x", "-1s", "1 parsec", "NaN", "inf", "-inf", "-0.5"] {
            assert!(parse_duration(bad).is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn durations_have_a_ceiling() {
        assert_eq!(parse_duration("365d"), Ok(MAX_DURATION));
        assert_eq!(parse_duration("31536000"), Ok(MAX_DURATION));
        for long in [
            "366d",
            "31536000.001",
            "1e19",
            "1e300",
            "18446744073709551616s",
            "300000000000y",
            "99999999999999999999999h",
        ] {
            let err = parse_duration(long).unwrap_err();
            assert!(err.contains("at most 365 days"), "{long}: {err}");
        }
        assert!(parse_keepalive("1e19,1s,3").is_err());
        assert!(parse_heartbeat("1e19,3").unwrap_err().contains("365 days"));
    }

    #[test]
    fn keepalive_and_heartbeat() {
        let k = parse_keepalive("1s,1s,3").unwrap();
        assert_eq!((k.idle.as_secs(), k.interval.as_secs(), k.count), (1, 1, 3));
        assert!(
            parse_keepalive("500ms,1s,3")
                .unwrap_err()
                .contains("whole seconds")
        );
        assert!(parse_keepalive("1s,1s").is_err());
        assert!(parse_keepalive("1s,1s,0").is_err());
        let h = parse_heartbeat("200ms,3").unwrap();
        assert_eq!((h.interval, h.misses), (Duration::from_millis(200), 3));
        assert!(parse_heartbeat("200ms").is_err());
        assert!(parse_heartbeat("200ms,0").is_err());
    }

    #[test]
    fn byte_counts() {
        assert_eq!(parse_bytes("100"), Ok(100));
        assert_eq!(parse_bytes("4k"), Ok(4096));
        assert_eq!(parse_bytes("64KiB"), Ok(65536));
        assert_eq!(parse_bytes("1M"), Ok(1 << 20));
        assert!(parse_bytes("2G").is_err());
        assert!(parse_bytes("x").is_err());
    }

    #[test]
    fn escapes_and_notice_limits() {
        assert_eq!(parse_escapes("PING\\r\\n").unwrap().0, b"PING\r\n");
        assert_eq!(parse_escapes("a\\x41\\\\\\t\\0").unwrap().0, b"aA\\\t\0");
        assert!(
            parse_escapes("x\\q")
                .unwrap_err()
                .contains("unknown escape")
        );
        assert!(parse_escapes("\\x4").is_err());
        assert!(parse_escapes("").is_err());
        let all = parse_notice_limits("5s").unwrap();
        assert_eq!(all.every, Some(Duration::from_secs(5)));
        assert!(all.per_mode.is_empty());
        let each = parse_notice_limits("drop=60s,fin=1s").unwrap();
        assert_eq!(each.every, None);
        assert_eq!(
            each.per_mode,
            vec![
                (CloseMode::Drop, Duration::from_secs(60)),
                (CloseMode::Fin, Duration::from_secs(1))
            ]
        );
        assert!(parse_notice_limits("dorp=1s").is_err());
        assert!(parse_notice_limits("fin=soon").is_err());
    }
}
