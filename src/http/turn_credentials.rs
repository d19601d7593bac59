//! TURN credentials as every route that hands them out mints them (assist, the TURN REST
//! endpoint, `/api/ice-servers`): one per configured server for a user id, counted by
//! server and kind, and the entries a browser's `RTCPeerConnection` takes as they are.

use super::assist::wire::IceServer;
use crate::ice::turn::{IssuedTurn, TurnServer};
use crate::metrics::TurnLabels;
use crate::state::AppState;

/// One server's credentials.
pub(crate) struct Minted<'a> {
    pub(crate) server: &'a TurnServer,
    pub(crate) issued: IssuedTurn,
}

/// Credentials for `user` from each of `servers`, valid `[ice] turn_ttl` from `now`.
pub(crate) fn mint<'a>(
    state: &AppState,
    servers: impl IntoIterator<Item = &'a TurnServer>,
    user: &str,
    now: u64,
) -> Vec<Minted<'a>> {
    servers
        .into_iter()
        .map(|server| {
            let issued = server.issue(user, now, state.config.ice.turn_ttl);
            count(state, server, &issued);
            Minted { server, issued }
        })
        .collect()
}

/// Counts one credential handed out.
pub(crate) fn count(state: &AppState, server: &TurnServer, issued: &IssuedTurn) {
    let kind = if issued.is_rest { "rest" } else { "static" };
    let name = server.urls.first().cloned().unwrap_or_default();
    state
        .metrics
        .turn_credentials
        .get_or_create(&TurnLabels { kind, server: name })
        .inc();
}

/// The STUN URLs, then each TURN server that has browser-usable URLs with its
/// credentials.
pub(crate) fn ice_servers(state: &AppState, minted: &[Minted<'_>]) -> Vec<IceServer> {
    let stun = (!state.endpoints.stun_urls.is_empty()).then(|| IceServer {
        urls: state.endpoints.stun_urls.clone(),
        username: None,
        credential: None,
    });
    let turn = minted
        .iter()
        .filter(|m| !m.server.browser_urls.is_empty())
        .map(|m| IceServer {
            urls: m.server.browser_urls.clone(),
            username: Some(m.issued.username.clone()),
            credential: Some(m.issued.credential.clone()),
        });
    stun.into_iter().chain(turn).collect()
}
