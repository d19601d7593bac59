//! Where clients reach this daemon, computed once its sockets are bound.

use std::net::SocketAddr;

use crate::config::Config;
use crate::state::Endpoints;

fn host_for_url(addr: &SocketAddr, domain: &str) -> String {
    if addr.ip().is_unspecified() {
        domain.to_string()
    } else if addr.is_ipv6() {
        format!("[{}]", addr.ip())
    } else {
        addr.ip().to_string()
    }
}

/// The public URLs and candidates, once the sockets are bound.
pub fn endpoints(config: &Config, http: SocketAddr, stun_addrs: Vec<SocketAddr>) -> Endpoints {
    let public_url = config.public_url(http);
    let connect_url = {
        let ws = if let Some(rest) = public_url.strip_prefix("https://") {
            format!("wss://{rest}")
        } else if let Some(rest) = public_url.strip_prefix("http://") {
            format!("ws://{rest}")
        } else {
            public_url.clone()
        };
        format!("{ws}/api/connect")
    };
    let public_host_port = url::Url::parse(&public_url)
        .ok()
        .map(|u| {
            let host = u
                .host_str()
                .unwrap_or_default()
                .trim_matches(['[', ']'])
                .to_string();
            (host, u.port_or_known_default().unwrap_or(0))
        })
        .unwrap_or_default();
    let advertised: Vec<SocketAddr> = match &config.ice.lite_public_address {
        Some(public) if config.ice.lite_enabled => public.clone(),
        _ => stun_addrs.clone(),
    };
    let stun_urls = advertised
        .iter()
        .map(|a| {
            format!(
                "stun:{}:{}",
                host_for_url(a, &config.server.domain),
                a.port()
            )
        })
        .collect();
    let candidate_addrs = advertised
        .into_iter()
        .filter(|a| !a.ip().is_unspecified())
        .collect();
    Endpoints {
        http,
        public_url,
        connect_url,
        public_host_port,
        stun_addrs,
        stun_urls,
        candidate_addrs,
    }
}
