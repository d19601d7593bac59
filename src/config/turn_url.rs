//! `turn:` / `turns:` URIs (RFC 7065) as the configuration accepts them.

use super::validate::is_host;

/// A parsed `turn:` / `turns:` URI (RFC 7065).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TurnUrl {
    pub secure: bool,
    pub host: String,
    pub port: u16,
    pub transport: Option<String>,
}

impl TurnUrl {
    /// Parses and checks a URI from `[[ice.turn]] urls`; the error says what is wrong.
    pub fn parse(url: &str) -> Result<Self, String> {
        let (secure, rest) = if let Some(r) = url.strip_prefix("turns:") {
            (true, r)
        } else if let Some(r) = url.strip_prefix("turn:") {
            (false, r)
        } else {
            return Err("must start with turn: or turns:".into());
        };
        let (hostport, query) = match rest.split_once('?') {
            Some((h, q)) => (h, Some(q)),
            None => (rest, None),
        };
        let transport = match query {
            None => None,
            Some(q) => match q.strip_prefix("transport=") {
                Some(t @ ("udp" | "tcp")) => Some(t.to_string()),
                _ => return Err("query must be transport=udp or transport=tcp".into()),
            },
        };
        let (host, port) = split_host_port(hostport)?;
        if !is_host(&host) {
            return Err(format!("{host:?} is not a hostname or IP address"));
        }
        let port = match port {
            Some(p) => p,
            None if secure => 5349,
            None => 3478,
        };
        Ok(Self {
            secure,
            host,
            port,
            transport,
        })
    }
}

fn split_host_port(s: &str) -> Result<(String, Option<u16>), String> {
    let parse_port = |p: &str| {
        p.parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("bad port {p:?}"))
    };
    if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or("unclosed [")?;
        if host.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(format!("{host:?} is not an IPv6 address"));
        }
        let port = match after.strip_prefix(':') {
            Some(p) => Some(parse_port(p)?),
            None if after.is_empty() => None,
            None => return Err("junk after ]".into()),
        };
        return Ok((host.to_string(), port));
    }
    match s.rsplit_once(':') {
        Some((host, port)) => Ok((host.to_string(), Some(parse_port(port)?))),
        None => Ok((s.to_string(), None)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_bad_urls() {
        for bad in [
            "stun:x",
            "turn:",
            "turn:host:0",
            "turn:host:99999",
            "turn:host?transport=sctp",
            "turn:[zz]:1",
        ] {
            assert!(TurnUrl::parse(bad).is_err(), "{bad}");
        }
    }
}
