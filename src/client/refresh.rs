//! Keeping assist's credentials fresh: fetch it, then fetch it again at half of the
//! shortest lifetime it carries (ICE `ttl_secs`, each TURN server's `ttl_secs`), so a
//! client always holds credentials with at least half their life left. Failures are
//! reported and retried with backoff; the caller decides what to do with each result.

use std::future::Future;
use std::time::Duration;

use super::http::{ClientError, fetch_assist};

/// Retry delays after a failure: 1 s, doubling, at most this.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Never fetch more often than this, whatever the TTLs say.
const MIN_INTERVAL: Duration = Duration::from_secs(1);

/// When to fetch again after `advice`: half of its shortest TTL (at least
/// [`MIN_INTERVAL`]); `None` when it names no TTL.
pub fn refresh_after(advice: &serde_json::Value) -> Option<Duration> {
    let ice = &advice["ice"];
    let ice_ttl = ice["ttl_secs"].as_u64();
    let turn_ttls = ice["servers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["ttl_secs"].as_u64());
    let shortest = ice_ttl.into_iter().chain(turn_ttls).min()?;
    Some(Duration::from_secs(shortest / 2).max(MIN_INTERVAL))
}

/// Fetches assist from `base` now and again at [`refresh_after`], handing every result
/// to `on_result`, until `stop` completes. After a failure it retries at 1 s, doubling
/// up to 30 s.
pub async fn keep_assist_fresh(
    client: &reqwest::Client,
    base: &str,
    access_token: Option<&str>,
    stop: impl Future<Output = ()>,
    mut on_result: impl FnMut(Result<serde_json::Value, ClientError>),
) {
    let mut stop = std::pin::pin!(stop);
    let mut backoff = MIN_INTERVAL;
    loop {
        let result = fetch_assist(client, base, None, access_token).await;
        let wait = match &result {
            Ok(advice) => {
                backoff = MIN_INTERVAL;
                refresh_after(advice).unwrap_or(MAX_BACKOFF)
            }
            Err(_) => {
                let wait = backoff;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                wait
            }
        };
        on_result(result);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = &mut stop => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_shortest_ttl_decides() {
        let advice = json!({"ice": {"ttl_secs": 600, "servers": [
            {"ttl_secs": 300}, {"ttl_secs": null}
        ]}});
        assert_eq!(refresh_after(&advice), Some(Duration::from_secs(150)));
        let advice = json!({"ice": {"ttl_secs": 1, "servers": []}});
        assert_eq!(refresh_after(&advice), Some(MIN_INTERVAL));
        assert_eq!(refresh_after(&json!({})), None);
    }
}
