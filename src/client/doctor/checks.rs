//! The checks doctor runs, one function a step.

use super::*;

/// Fetches server-info, keeping the `Date` header; on failure a detail and a hint.
pub(super) async fn fetch_info(options: &DoctorOptions) -> Result<Fetched, (String, String)> {
    let url = join(&options.base, "/api/server-info").map_err(|e| {
        (
            e.to_string(),
            "give the daemon's base URL, e.g. http://host:8080 or https://host".to_string(),
        )
    })?;
    let client = http_client(options.timeout)
        .map_err(|e| (e.to_string(), "cannot build an HTTP client".to_string()))?;
    let fetching = async {
        let response = client.get(&url).send().await.map_err(|e| {
            let text = describe(&e);
            let hint = connect_hint(&text, e.is_timeout());
            (format!("cannot reach {url}: {text}"), hint)
        })?;
        let status = response.status();
        let date = response
            .headers()
            .get(reqwest::header::DATE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = response.bytes().await.map_err(|e| {
            let text = describe(&e);
            let hint = connect_hint(&text, e.is_timeout());
            (format!("reading {url}: {text}"), hint)
        })?;
        if !status.is_success() {
            return Err((
                format!("{url} answered HTTP {}", status.as_u16()),
                status_hint(status.as_u16()),
            ));
        }
        let info: ServerInfo = serde_json::from_slice(&body).map_err(|e| {
            (
                format!("{url} did not return a server-info document: {e}"),
                "the URL reaches something other than a CommuCat daemon (a proxy's page, \
                 another service on that port)"
                    .to_string(),
            )
        })?;
        Ok(Fetched { info, date })
    };
    match tokio::time::timeout(options.timeout, fetching).await {
        Ok(result) => result,
        Err(_) => Err((
            format!("no answer from {url} in {:?}", options.timeout),
            connect_hint("timed out", true),
        )),
    }
}

/// Checks `ice.ice_servers` (and the URLs of `ice.servers`); the number of entries.
pub(super) fn check_ice_servers(ice: &serde_json::Value) -> Result<usize, String> {
    let entries = ice["ice_servers"]
        .as_array()
        .ok_or("ice.ice_servers is missing or not an array")?;
    for (i, entry) in entries.iter().enumerate() {
        let urls = entry["urls"]
            .as_array()
            .ok_or(format!("ice.ice_servers[{i}].urls is not an array"))?;
        if urls.is_empty() {
            return Err(format!("ice.ice_servers[{i}].urls is empty"));
        }
        let mut turn = false;
        for url in urls {
            let url = url
                .as_str()
                .ok_or(format!("ice.ice_servers[{i}].urls has a non-string entry"))?;
            if url.starts_with("turn:") || url.starts_with("turns:") {
                turn = true;
            } else if !url.starts_with("stun:") {
                return Err(format!(
                    "ice.ice_servers[{i}] has URL {url:?}: not stun:, turn: or turns:"
                ));
            }
        }
        if turn {
            for field in ["username", "credential"] {
                if entry[field].as_str().is_none_or(str::is_empty) {
                    return Err(format!("TURN entry ice.ice_servers[{i}] has no {field}"));
                }
            }
        }
    }
    Ok(entries.len())
}

/// `ice.expires_at` minus now should be `ice.ttl_secs` (the credential was just minted).
pub(super) fn check_expiry(
    report: &mut Report,
    started: Instant,
    ice: &serde_json::Value,
    options: &DoctorOptions,
) {
    let step = "credential-expiry";
    let expires = ice["expires_at"]
        .as_str()
        .and_then(crate::time::parse_rfc3339)
        .and_then(|t| i64::try_from(t).ok());
    let ttl = ice["ttl_secs"].as_i64();
    let (Some(expires), Some(ttl)) = (expires, ttl) else {
        report.fail(
            step,
            started,
            "ice.expires_at or ice.ttl_secs is missing or malformed",
            "assist's answer is not what a CommuCat daemon sends: a proxy in front?",
        );
        return;
    };
    let left = expires - local_now(options);
    let off = left - ttl;
    if off.abs() <= MAX_SKEW_SECS {
        report.pass(
            step,
            started,
            format!("ICE credential valid for {left} s here (ttl_secs {ttl})"),
        );
    } else {
        report.fail(
            step,
            started,
            format!(
                "ICE credential valid for {left} s by our clock, but ttl_secs is {ttl} ({off:+} s)"
            ),
            clock_hint(),
        );
    }
}

/// An authenticated STUN check of every ICE-lite candidate.
pub(super) async fn check_stun(report: &mut Report, ice: &serde_json::Value, timeout: Duration) {
    let candidates = ice["lite_candidates"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if candidates.is_empty() {
        report.note(
            "stun",
            "no ICE-lite candidates advertised ([ice] lite_enabled = false, or bound to 0.0.0.0 \
             without lite_public_address)",
        );
        return;
    }
    let ufrag = ice["username_fragment"].as_str().unwrap_or_default();
    let password = ice["password"].as_str().unwrap_or_default();
    for candidate in &candidates {
        let started = Instant::now();
        let ip = candidate["ip"].as_str().and_then(|s| s.parse().ok());
        let port = candidate["port"]
            .as_u64()
            .and_then(|p| u16::try_from(p).ok());
        let (Some(ip), Some(port)) = (ip, port) else {
            report.fail(
                "stun",
                started,
                format!("malformed lite candidate {candidate}"),
                "assist's answer is not what a CommuCat daemon sends: a proxy in front?",
            );
            continue;
        };
        let addr = SocketAddr::new(ip, port);
        let step = format!("stun {addr}");
        let creds = Some((format!("{ufrag}:doctor"), password.to_string()));
        match probe_addr(addr, creds, false, timeout, true).await {
            Ok((probe, from)) => {
                if let Some((code, reason)) = &probe.error {
                    report.fail(
                        step,
                        started,
                        format!("error response {code} {reason}"),
                        "the responder refused assist's ICE credentials: nodes behind one URL \
                         need the same [ice] credential_secret, and the clocks must agree",
                    );
                } else if from != addr {
                    report.fail(
                        step,
                        started,
                        format!("the answer came from {from}, not from the advertised {addr}"),
                        "lite_public_address does not match where the responder answers from: \
                         set [ice] lite_public_address to the address clients reach, or bind \
                         lite_bind to that address rather than 0.0.0.0",
                    );
                } else if probe.integrity != Some(true) {
                    report.fail(
                        step,
                        started,
                        "the response's MESSAGE-INTEGRITY does not verify",
                        "something between rewrites STUN, or the responder uses another \
                         credential secret",
                    );
                } else if let Some(reflexive) = probe.reflexive {
                    report.pass(
                        step,
                        started,
                        format!(
                            "authenticated answer, reflexive address {reflexive}, rtt {:.1} ms",
                            probe.rtt.as_secs_f64() * 1e3
                        ),
                    );
                } else {
                    report.fail(
                        step,
                        started,
                        "the answer has no XOR-MAPPED-ADDRESS",
                        "this is not a CommuCat responder",
                    );
                }
            }
            Err(ProbeError::Timeout { .. }) => report.fail(
                step,
                started,
                format!("no STUN answer from {addr} in {timeout:?}"),
                "the STUN port is closed or UDP is filtered, or [ice] lite_public_address \
                 advertises an address the responder does not listen on",
            ),
            Err(e) => report.fail(
                step,
                started,
                e.to_string(),
                "a local socket error: can this host send UDP?",
            ),
        }
    }
}

/// Allocation, a packet relayed to ourselves, and a refresh on every UDP TURN URL.
pub(super) async fn check_turn(report: &mut Report, ice: &serde_json::Value, timeout: Duration) {
    let servers = ice["servers"].as_array().cloned().unwrap_or_default();
    if servers.is_empty() {
        report.note(
            "turn",
            "no TURN servers in assist ([[ice.turn]] not configured)",
        );
        return;
    }
    for server in &servers {
        let username = server["username"].as_str().unwrap_or_default();
        let credential = server["credential"].as_str().unwrap_or_default();
        let urls = server["urls"].as_array().cloned().unwrap_or_default();
        for url in urls {
            let url = url.as_str().unwrap_or_default();
            let step = format!("turn {url}");
            let started = Instant::now();
            let parsed = match TurnUrl::parse(url) {
                Ok(p) => p,
                Err(e) => {
                    report.fail(
                        step,
                        started,
                        format!("unusable URL: {e}"),
                        "fix [[ice.turn]] urls",
                    );
                    continue;
                }
            };
            if parsed.secure || parsed.transport.as_deref().is_some_and(|t| t != "udp") {
                report.note(step, "only UDP TURN is checked (tcp/tls skipped)");
                continue;
            }
            match relay_to_self(&parsed, username, credential, timeout).await {
                Ok(detail) => report.pass(step, started, detail),
                Err((detail, hint)) => report.fail(step, started, detail, hint),
            }
        }
    }
}

pub(super) async fn relay_to_self(
    url: &TurnUrl,
    username: &str,
    credential: &str,
    timeout: Duration,
) -> Result<String, (String, String)> {
    let deadline = Instant::now() + timeout;
    let left = || deadline.saturating_duration_since(Instant::now());
    let host = url.host.trim_start_matches('[').trim_end_matches(']');
    let server = match host.parse::<std::net::IpAddr>() {
        Ok(ip) => SocketAddr::new(ip, url.port),
        Err(_) => {
            let lookup = tokio::net::lookup_host((host, url.port));
            match tokio::time::timeout(left(), lookup).await {
                Ok(Ok(mut addrs)) => addrs.next().ok_or_else(|| {
                    (
                        format!("{host} resolves to no address"),
                        "fix the DNS name in [[ice.turn]] urls".to_string(),
                    )
                })?,
                Ok(Err(e)) => {
                    return Err((
                        format!("cannot resolve {host}: {e}"),
                        "fix the DNS name in [[ice.turn]] urls".into(),
                    ));
                }
                Err(_) => {
                    return Err((
                        format!("resolving {host} timed out"),
                        "DNS is slow or unreachable".into(),
                    ));
                }
            }
        }
    };
    let mut allocation = turn::allocate(server, username, credential, left())
        .await
        .map_err(|e| turn_failure(server, &e))?;
    let relayed = allocation.relayed();
    allocation
        .create_permission(relayed.ip(), left())
        .await
        .map_err(|e| turn_failure(server, &e))?;
    let payload = b"commucat doctor";
    allocation
        .send(relayed, payload)
        .await
        .map_err(|e| turn_failure(server, &e))?;
    let (from, data) = allocation
        .recv(left())
        .await
        .map_err(|e| turn_failure(server, &e))?;
    if from != relayed || data != payload {
        return Err((
            format!(
                "relayed data came back wrong (from {from}, {} bytes)",
                data.len()
            ),
            "the TURN server mangles relayed data".into(),
        ));
    }
    let granted = allocation
        .refresh(600, left())
        .await
        .map_err(|e| turn_failure(server, &e))?;
    let _ = allocation.release(left()).await;
    Ok(format!(
        "allocated {relayed} on {server}, relayed a packet to itself, refreshed ({} s)",
        granted.as_secs()
    ))
}

/// Connects, sends a ping and waits for its pong.
pub(super) async fn handshake(
    report: &mut Report,
    step: &str,
    base: &str,
    info: &ServerInfo,
    options: ConnectOptions,
) {
    let started = Instant::now();
    let timeout = options.timeout;
    let pq = options.pq;
    let run = async {
        let mut connection = connect_with_info(base, info, options).await?;
        let handshake_time = connection.handshake_time;
        let ping_started = Instant::now();
        connection
            .send(&ClientMessage::Ping { id: 4242.into() })
            .await?;
        loop {
            match connection.recv().await? {
                ServerMessage::Pong { id } if id.as_u64() == Some(4242) => break,
                _ => {}
            }
        }
        let ping = ping_started.elapsed();
        let session_pq = connection.pq;
        let key_version = connection.key_version;
        let _ = connection.close().await;
        Ok::<_, ConnectError>((handshake_time, ping, session_pq, key_version))
    };
    match tokio::time::timeout(timeout, run).await {
        Ok(Ok((handshake_time, ping, session_pq, key_version))) if session_pq == pq => report.pass(
            step,
            started,
            format!(
                "key version {key_version}, handshake {:.1} ms, ping {:.1} ms",
                handshake_time.as_secs_f64() * 1e3,
                ping.as_secs_f64() * 1e3
            ),
        ),
        Ok(Ok((_, _, session_pq, _))) => report.fail(
            step,
            started,
            format!("the session has pq = {session_pq}"),
            "the server did not run the handshake asked for",
        ),
        Ok(Err(e)) => {
            let hint = connect_error_hint(&e);
            report.fail(step, started, format!("{e}: {}", error_chain(&e)), hint);
        }
        Err(_) => report.fail(
            step,
            started,
            format!("no session in {timeout:?}"),
            "the daemon is overloaded, or a proxy does not pass WebSocket traffic",
        ),
    }
}

/// Parses an HTTP date (`Sun, 06 Nov 1994 08:49:37 GMT`, with the `httpdate` crate) to
/// unix seconds.
pub fn parse_http_date(text: &str) -> Option<i64> {
    let at = httpdate::parse_http_date(text.trim()).ok()?;
    let secs = at.duration_since(std::time::UNIX_EPOCH).ok()?.as_secs();
    i64::try_from(secs).ok()
}
