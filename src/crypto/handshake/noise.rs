//! The Noise layer both sides share: protocol parameters, framing limits, message
//! reading and writing through `snow`, and the step from a finished Noise handshake to
//! the session keys.

use std::sync::LazyLock;

use snow::params::NoiseParams;
use zeroize::{Zeroize as _, Zeroizing};

use super::error::{HandshakeError, Malformed};
use super::header::Pattern;
use crate::crypto::kdf::{CombinerInput, KEY_LEN, SessionKeys, derive_session_keys};

/// X25519 key and output length.
pub(super) const DH_LEN: usize = 32;
const NOISE_TAG_LEN: usize = 16;
/// Largest Noise message (Noise spec; `snow` refuses longer ones).
pub(super) const MAX_NOISE_MESSAGE_LEN: usize = 65_535;

static XK_PARAMS: LazyLock<NoiseParams> =
    LazyLock::new(|| parse_params("Noise_XK_25519_ChaChaPoly_BLAKE2s"));
static IK_PARAMS: LazyLock<NoiseParams> =
    LazyLock::new(|| parse_params("Noise_IK_25519_ChaChaPoly_BLAKE2s"));

fn parse_params(name: &str) -> NoiseParams {
    match name.parse() {
        Ok(params) => params,
        Err(err) => unreachable!("static Noise protocol name {name} does not parse: {err}"),
    }
}

/// Parsed once: `snow` would otherwise parse the protocol name on every handshake.
pub(super) fn params_for(pattern: Pattern) -> &'static NoiseParams {
    match pattern {
        Pattern::Xk => &XK_PARAMS,
        Pattern::Ik => &IK_PARAMS,
    }
}

/// Maps `snow`'s errors on peer input to close codes; anything else is our bug.
pub(super) fn noise_error(err: snow::Error) -> HandshakeError {
    match err {
        snow::Error::Decrypt | snow::Error::Dh => HandshakeError::Decrypt,
        snow::Error::Input => Malformed::NoiseFraming.into(),
        _ => HandshakeError::Internal("Noise state"),
    }
}

pub(super) fn read_noise(
    noise: &mut snow::HandshakeState,
    message: &[u8],
) -> Result<Vec<u8>, HandshakeError> {
    if message.len() > MAX_NOISE_MESSAGE_LEN {
        return Err(Malformed::NoiseFraming.into());
    }
    let mut payload = vec![0u8; message.len()];
    let len = noise
        .read_message(message, &mut payload)
        .map_err(noise_error)?;
    payload.truncate(len);
    Ok(payload)
}

pub(super) fn write_noise(
    noise: &mut snow::HandshakeState,
    payload: &[u8],
) -> Result<Vec<u8>, HandshakeError> {
    // Worst case of both patterns: e, encrypted s, payload tag. Our payloads are at
    // most 2272 bytes, far below Noise's 65535-byte message limit.
    let mut message = vec![0u8; DH_LEN + DH_LEN + NOISE_TAG_LEN + payload.len() + NOISE_TAG_LEN];
    let len = noise
        .write_message(payload, &mut message)
        .map_err(|_| HandshakeError::Internal("writing a Noise message"))?;
    message.truncate(len);
    Ok(message)
}

/// Raw split, handshake hash, and the hybrid combiner of §4.
pub(super) fn session_keys(
    noise: &mut snow::HandshakeState,
    ss_s: Option<&[u8; KEY_LEN]>,
    ss_e: Option<&[u8; KEY_LEN]>,
) -> Result<SessionKeys, HandshakeError> {
    if !noise.is_handshake_finished() {
        return Err(HandshakeError::Internal("handshake not finished"));
    }
    // The split is returned by value: wipe snow's copy once ours is taken.
    let mut split = noise.dangerously_get_raw_split();
    let (k1, k2) = (Zeroizing::new(split.0), Zeroizing::new(split.1));
    split.0.zeroize();
    split.1.zeroize();
    let handshake_hash = noise.get_handshake_hash();
    Ok(derive_session_keys(&CombinerInput {
        handshake_hash,
        k1: &k1,
        k2: &k2,
        ss_s,
        ss_e,
    }))
}
