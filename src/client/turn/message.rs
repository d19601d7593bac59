//! Building requests and indications, and reading what the server sends back.

use super::*;

pub(super) fn allocate_attributes(options: &AllocateOptions) -> Vec<StunAttribute> {
    let mut attributes: Vec<StunAttribute> =
        vec![RequestedTrasport::new(stun_rs::protocols::UDP).into()];
    if let Some(family) = options.family {
        let family = match family {
            RelayFamily::Ipv4 => AddressFamily::IPv4,
            RelayFamily::Ipv6 => AddressFamily::IPv6,
        };
        attributes.push(RequestedAddressFamily::new(family).into());
    }
    if let Some(lifetime) = options.lifetime {
        attributes.push(LifeTime::new(lifetime).into());
    }
    attributes
}

pub(super) fn encode(message: &StunMessage, capacity: usize) -> Result<Vec<u8>, TurnError> {
    let mut out = vec![0u8; capacity];
    let len = MessageEncoderBuilder::default()
        .build()
        .encode(&mut out, message)
        .map_err(|e| TurnError::Protocol(format!("cannot encode a message: {e}")))?;
    out.truncate(len);
    Ok(out)
}

/// A request: `attributes`, then (once challenged) USERNAME, REALM, NONCE and
/// MESSAGE-INTEGRITY, then FINGERPRINT.
pub(super) fn encode_request(
    method: MessageMethod,
    tid: &[u8; 12],
    attributes: &[StunAttribute],
    auth: &Auth,
) -> Result<Vec<u8>, TurnError> {
    let mut builder = StunMessageBuilder::new(method, MessageClass::Request)
        .with_transaction_id(TransactionId::from(*tid));
    for attribute in attributes {
        builder = builder.with_attribute(attribute.clone());
    }
    if let Some(session) = &auth.session {
        let username = UserName::new(&auth.username)
            .map_err(|e| TurnError::Credential(format!("username: {e}")))?;
        builder = builder
            .with_attribute(username)
            .with_attribute(session.realm.clone())
            .with_attribute(session.nonce.clone());
    }
    let mut out = encode(&builder.build(), REQUEST_CAPACITY)?;
    if let Some(session) = &auth.session {
        wire::append_integrity(&mut out, IntegrityKind::Sha1, &session.key);
    }
    wire::append_fingerprint(&mut out);
    Ok(out)
}

/// A Send indication: XOR-PEER-ADDRESS, DATA, FINGERPRINT (indications carry no
/// MESSAGE-INTEGRITY, RFC 8656 §11.1).
pub(super) fn send_indication(
    tid: &[u8; 12],
    peer: SocketAddr,
    data: &[u8],
) -> Result<Vec<u8>, TurnError> {
    if data.len() > MAX_DATA_LEN {
        return Err(TurnError::TooLarge {
            len: data.len(),
            max: MAX_DATA_LEN,
        });
    }
    let message = StunMessageBuilder::new(SEND, MessageClass::Indication)
        .with_transaction_id(TransactionId::from(*tid))
        .with_attribute(XorPeerAddress::from(peer))
        .with_attribute(Data::new(data))
        .build();
    let mut out = encode(&message, REQUEST_CAPACITY + data.len())?;
    wire::append_fingerprint(&mut out);
    Ok(out)
}

/// The response to the transaction being waited for.
#[derive(Debug)]
pub(super) enum Response {
    Success(StunMessage),
    Error {
        code: u16,
        reason: String,
        message: StunMessage,
    },
}

/// What one datagram from the server is.
#[derive(Debug)]
pub(super) enum Incoming {
    Response(Response),
    Data {
        peer: SocketAddr,
        data: Vec<u8>,
    },
    /// Not STUN, a wrong FINGERPRINT or MESSAGE-INTEGRITY, another transaction, …
    Discard(&'static str),
}

/// Sorts one datagram from the server. `expect` is the transaction waited for, `key`
/// the long-term key when the request carried MESSAGE-INTEGRITY. `Err` only for a
/// response to our transaction that breaks the protocol.
pub(super) fn classify(
    packet: &[u8],
    expect: Option<(&[u8; 12], MessageMethod)>,
    key: Option<&[u8]>,
) -> Result<Incoming, TurnError> {
    if wire::fingerprint_status(packet) == Some(false) {
        return Ok(Incoming::Discard("FINGERPRINT does not match"));
    }
    let Ok((message, _)) = MessageDecoderBuilder::default().build().decode(packet) else {
        return Ok(Incoming::Discard("not a STUN message"));
    };
    if message.class() == MessageClass::Indication && message.method() == DATA {
        let peer = message
            .get::<XorPeerAddress>()
            .and_then(|a| a.as_xor_peer_address().ok())
            .map(|a| *a.socket_address());
        let data = message
            .get::<Data>()
            .and_then(|a| a.as_data().ok())
            .map(|d| d.as_bytes().to_vec());
        return Ok(match (peer, data) {
            (Some(peer), Some(data)) => Incoming::Data { peer, data },
            _ => Incoming::Discard("Data indication without XOR-PEER-ADDRESS or DATA"),
        });
    }
    let Some((tid, method)) = expect else {
        return Ok(Incoming::Discard("no transaction waiting"));
    };
    if message.transaction_id().as_bytes() != tid {
        return Ok(Incoming::Discard("another transaction"));
    }
    let class = message.class();
    if message.method() != method
        || !matches!(
            class,
            MessageClass::SuccessResponse | MessageClass::ErrorResponse
        )
    {
        return Err(TurnError::Protocol(format!(
            "a {class:?} of method {:#05x} answered our {} request",
            message.method().as_u16(),
            response_name(method)
        )));
    }
    if let Some(key) = key {
        let has_integrity = message.get::<MessageIntegrity>().is_some()
            || message.get::<MessageIntegritySha256>().is_some();
        if has_integrity && !wire::verify_integrity(packet, IntegrityKind::Sha1, key) {
            return Ok(Incoming::Discard("MESSAGE-INTEGRITY does not verify"));
        }
        if !has_integrity && class == MessageClass::SuccessResponse {
            return Ok(Incoming::Discard(
                "success response without MESSAGE-INTEGRITY",
            ));
        }
    }
    if class == MessageClass::SuccessResponse {
        return Ok(Incoming::Response(Response::Success(message)));
    }
    let (code, reason) = message
        .get::<ErrorCode>()
        .and_then(|a| a.as_error_code().ok())
        .map(|e| {
            (
                e.error_code().error_code(),
                e.error_code().reason().to_owned(),
            )
        })
        .ok_or_else(|| TurnError::Protocol("error response without ERROR-CODE".into()))?;
    Ok(Incoming::Response(Response::Error {
        code,
        reason,
        message,
    }))
}

/// What an Allocate success response grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Granted {
    pub(super) relayed: SocketAddr,
    pub(super) mapped: SocketAddr,
    pub(super) lifetime: Duration,
}

pub(super) fn allocation_from(reply: &StunMessage) -> Result<Granted, TurnError> {
    let missing = |name: &str| TurnError::Protocol(format!("Allocate success without {name}"));
    let relayed = reply
        .get::<XorRelayedAddress>()
        .and_then(|a| a.as_xor_relayed_address().ok())
        .map(|a| *a.socket_address())
        .ok_or_else(|| missing("XOR-RELAYED-ADDRESS"))?;
    let mapped = reply
        .get::<XorMappedAddress>()
        .and_then(|a| a.as_xor_mapped_address().ok())
        .map(|a| *a.socket_address())
        .ok_or_else(|| missing("XOR-MAPPED-ADDRESS"))?;
    let lifetime = lifetime_of(reply).ok_or_else(|| missing("LIFETIME"))?;
    Ok(Granted {
        relayed,
        mapped,
        lifetime,
    })
}

pub(super) fn lifetime_of(reply: &StunMessage) -> Option<Duration> {
    reply
        .get::<LifeTime>()
        .and_then(|a| a.as_life_time().ok())
        .map(|l| Duration::from_secs(u64::from(l.as_u32())))
}
