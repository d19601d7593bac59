use super::*;
use stun_rs::attributes::stun::Fingerprint;
use stun_rs::{DecoderContextBuilder, protocols};

const USER: &str = "alice";
const REALM: &str = "commucat.test";
const PASSWORD: &str = "s3cret";
/// MD5("alice:commucat.test:s3cret"), computed independently of `stun-rs`.
const KEY: [u8; 16] = [
    82, 175, 13, 90, 107, 240, 182, 222, 160, 49, 8, 73, 22, 146, 128, 139,
];
const TIMEOUT: Duration = Duration::from_secs(5);

fn relayed() -> SocketAddr {
    "192.0.2.10:50000".parse().unwrap()
}

fn mapped() -> SocketAddr {
    "198.51.100.7:40000".parse().unwrap()
}

fn peer() -> SocketAddr {
    "[2001:db8::7]:4242".parse().unwrap()
}

fn decode(packet: &[u8]) -> StunMessage {
    MessageDecoderBuilder::default()
        .build()
        .decode(packet)
        .unwrap()
        .0
}

/// The server's key, derived by `stun-rs`.
fn server_key(password: &str) -> HMACKey {
    HMACKey::new_long_term(USER, REALM, password, Algorithm::from(AlgorithmId::MD5)).unwrap()
}

/// A message as a server would send it, encoded by `stun-rs` alone (its own
/// MESSAGE-INTEGRITY when `key` is given), with FINGERPRINT.
fn message(
    method: MessageMethod,
    class: MessageClass,
    tid: &[u8; 12],
    attributes: Vec<StunAttribute>,
    key: Option<HMACKey>,
) -> Vec<u8> {
    let mut builder =
        StunMessageBuilder::new(method, class).with_transaction_id(TransactionId::from(*tid));
    for attribute in attributes {
        builder = builder.with_attribute(attribute);
    }
    if let Some(key) = key {
        builder = builder.with_attribute(MessageIntegrity::new(key));
    }
    builder = builder.with_attribute(Fingerprint::default());
    encode(&builder.build(), 2048).unwrap()
}

fn error(
    method: MessageMethod,
    tid: &[u8; 12],
    code: u16,
    extra: Vec<StunAttribute>,
    key: Option<HMACKey>,
) -> Vec<u8> {
    let code = stun_rs::ErrorCode::new(code, "Because").unwrap();
    let mut attributes = vec![ErrorCode::from(code).into()];
    attributes.extend(extra);
    message(method, MessageClass::ErrorResponse, tid, attributes, key)
}

fn challenge(nonce: &str) -> Vec<StunAttribute> {
    vec![
        Realm::new(REALM).unwrap().into(),
        Nonce::new(nonce).unwrap().into(),
    ]
}

fn allocate_success(tid: &[u8; 12], key: Option<HMACKey>) -> Vec<u8> {
    let attributes = vec![
        XorRelayedAddress::from(relayed()).into(),
        XorMappedAddress::from(mapped()).into(),
        LifeTime::new(600).into(),
    ];
    message(
        ALLOCATE,
        MessageClass::SuccessResponse,
        tid,
        attributes,
        key,
    )
}

fn data_indication(tid: &[u8; 12], from: SocketAddr, data: &[u8]) -> Vec<u8> {
    let attributes = vec![XorPeerAddress::from(from).into(), Data::new(data).into()];
    message(DATA, MessageClass::Indication, tid, attributes, None)
}

fn challenged(nonce: &str) -> Auth {
    let mut auth = Auth::new(USER, PASSWORD).unwrap();
    let reply = decode(&error(ALLOCATE, &[1; 12], 401, challenge(nonce), None));
    auth.challenge(&reply, 401).unwrap();
    auth
}

fn tid_of(m: &StunMessage) -> [u8; 12] {
    *m.transaction_id().as_bytes()
}

#[test]
fn first_allocate_asks_for_a_udp_relay_without_credentials() {
    let auth = Auth::new(USER, PASSWORD).unwrap();
    let options = AllocateOptions {
        family: Some(RelayFamily::Ipv6),
        lifetime: Some(300),
        local: None,
    };
    let tid = [7u8; 12];
    let request = encode_request(ALLOCATE, &tid, &allocate_attributes(&options), &auth).unwrap();
    assert_eq!(wire::fingerprint_status(&request), Some(true));
    let m = decode(&request);
    assert_eq!((m.method(), m.class()), (ALLOCATE, MessageClass::Request));
    assert_eq!(tid_of(&m), tid);
    let transport = m.get::<RequestedTrasport>().unwrap();
    assert_eq!(
        transport.as_requested_trasport().unwrap().protocol(),
        protocols::UDP
    );
    let family = m.get::<RequestedAddressFamily>().unwrap();
    assert_eq!(
        family.as_requested_address_family().unwrap().family(),
        AddressFamily::IPv6
    );
    assert_eq!(m.get::<LifeTime>().unwrap().as_life_time().unwrap(), &300);
    assert!(m.get::<UserName>().is_none());
    assert!(m.get::<MessageIntegrity>().is_none());
    let plain = encode_request(
        ALLOCATE,
        &tid,
        &allocate_attributes(&AllocateOptions::default()),
        &auth,
    )
    .unwrap();
    // REQUESTED-TRANSPORT and FINGERPRINT only.
    assert_eq!(decode(&plain).attributes().len(), 2);
}

#[test]
fn challenge_takes_realm_and_nonce_and_derives_the_long_term_key() {
    let auth = challenged("nonce-1");
    let session = auth.session.as_ref().unwrap();
    assert_eq!(session.realm.as_str(), REALM);
    assert_eq!(session.nonce.as_str(), "nonce-1");
    assert_eq!(session.key.as_slice(), &KEY);
}

#[test]
fn a_challenge_needs_a_nonce_and_a_realm_once() {
    let mut auth = Auth::new(USER, PASSWORD).unwrap();
    let bare = decode(&error(ALLOCATE, &[1; 12], 401, vec![], None));
    assert!(matches!(
        auth.challenge(&bare, 401),
        Err(TurnError::Protocol(e)) if e.contains("NONCE")
    ));
    let nonce_only = vec![Nonce::new("n1").unwrap().into()];
    let no_realm = decode(&error(ALLOCATE, &[1; 12], 401, nonce_only.clone(), None));
    assert!(matches!(
        auth.challenge(&no_realm, 401),
        Err(TurnError::Protocol(e)) if e.contains("REALM")
    ));
    // A 438 may leave REALM out once it is known.
    let mut auth = challenged("n0");
    let stale = decode(&error(ALLOCATE, &[1; 12], 438, nonce_only, None));
    auth.challenge(&stale, 438).unwrap();
    let session = auth.session.as_ref().unwrap();
    assert_eq!(
        (session.realm.as_str(), session.nonce.as_str()),
        (REALM, "n1")
    );
}

#[test]
fn authenticated_request_carries_a_mac_the_server_verifies() {
    let auth = challenged("nonce-1");
    let tid = [9u8; 12];
    let request = encode_request(REFRESH, &tid, &[LifeTime::new(0).into()], &auth).unwrap();
    // The server side: stun-rs validates MESSAGE-INTEGRITY and FINGERPRINT with its
    // own key.
    let validating = |password: &str| {
        let ctx = DecoderContextBuilder::default()
            .with_key(server_key(password))
            .with_validation()
            .build();
        MessageDecoderBuilder::default()
            .with_context(ctx)
            .build()
            .decode(&request)
            .map(|(m, _)| m)
    };
    let m = validating(PASSWORD).unwrap();
    assert_eq!((m.method(), m.class()), (REFRESH, MessageClass::Request));
    assert_eq!(
        m.get::<UserName>()
            .unwrap()
            .as_user_name()
            .unwrap()
            .as_str(),
        USER
    );
    assert_eq!(
        m.get::<Realm>().unwrap().as_realm().unwrap().as_str(),
        REALM
    );
    assert_eq!(
        m.get::<Nonce>().unwrap().as_nonce().unwrap().as_str(),
        "nonce-1"
    );
    assert_eq!(m.get::<LifeTime>().unwrap().as_life_time().unwrap(), &0);
    assert!(validating("wrong").is_err());
    assert!(wire::verify_integrity(&request, IntegrityKind::Sha1, &KEY));
    assert_eq!(wire::fingerprint_status(&request), Some(true));
}

#[test]
fn send_indication_carries_peer_and_data_and_no_mac() {
    let tid = [4u8; 12];
    let indication = send_indication(&tid, peer(), b"hello").unwrap();
    let m = decode(&indication);
    assert_eq!((m.method(), m.class()), (SEND, MessageClass::Indication));
    let to = m.get::<XorPeerAddress>().unwrap();
    assert_eq!(*to.as_xor_peer_address().unwrap().socket_address(), peer());
    assert_eq!(
        m.get::<Data>().unwrap().as_data().unwrap().as_bytes(),
        b"hello"
    );
    assert!(m.get::<MessageIntegrity>().is_none());
    assert_eq!(wire::fingerprint_status(&indication), Some(true));
    let largest = send_indication(&tid, peer(), &vec![0; MAX_DATA_LEN]).unwrap();
    assert!(largest.len() <= 65_507, "{}", largest.len());
    assert!(matches!(
        send_indication(&tid, peer(), &vec![0; MAX_DATA_LEN + 1]),
        Err(TurnError::TooLarge { len, .. }) if len == MAX_DATA_LEN + 1
    ));
}

#[test]
fn a_success_counts_only_with_a_mac_that_verifies() {
    let tid = [3u8; 12];
    let expect = Some((&tid, ALLOCATE));
    let good = allocate_success(&tid, Some(server_key(PASSWORD)));
    let Incoming::Response(Response::Success(m)) = classify(&good, expect, Some(&KEY)).unwrap()
    else {
        panic!("a valid success response was not taken");
    };
    assert_eq!(
        allocation_from(&m).unwrap(),
        Granted {
            relayed: relayed(),
            mapped: mapped(),
            lifetime: Duration::from_secs(600),
        }
    );
    let forged = allocate_success(&tid, Some(server_key("guess")));
    assert!(matches!(
        classify(&forged, expect, Some(&KEY)).unwrap(),
        Incoming::Discard(why) if why.contains("MESSAGE-INTEGRITY")
    ));
    let bare = allocate_success(&tid, None);
    assert!(matches!(
        classify(&bare, expect, Some(&KEY)).unwrap(),
        Incoming::Discard(why) if why.contains("without MESSAGE-INTEGRITY")
    ));
    // A server that asked for no credentials sends none.
    assert!(matches!(
        classify(&bare, expect, None).unwrap(),
        Incoming::Response(Response::Success(_))
    ));
    let mut corrupt = good.clone();
    let last = corrupt.len() - 1;
    corrupt[last] ^= 1;
    assert!(matches!(
        classify(&corrupt, expect, Some(&KEY)).unwrap(),
        Incoming::Discard(why) if why.contains("FINGERPRINT")
    ));
}

#[test]
fn a_response_must_match_transaction_and_method() {
    let tid = [3u8; 12];
    let other = allocate_success(&[4u8; 12], None);
    assert!(matches!(
        classify(&other, Some((&tid, ALLOCATE)), None).unwrap(),
        Incoming::Discard("another transaction")
    ));
    let ours = allocate_success(&tid, None);
    assert!(matches!(
        classify(&ours, Some((&tid, REFRESH)), None),
        Err(TurnError::Protocol(_))
    ));
    assert!(matches!(
        classify(&ours, None, None).unwrap(),
        Incoming::Discard(_)
    ));
    assert!(matches!(
        classify(b"not STUN at all", Some((&tid, ALLOCATE)), None).unwrap(),
        Incoming::Discard("not a STUN message")
    ));
}

#[test]
fn error_responses_give_code_and_reason() {
    let tid = [5u8; 12];
    let expect = Some((&tid, CREATE_PERMMISSION));
    let forbidden = error(CREATE_PERMMISSION, &tid, 403, vec![], None);
    assert!(matches!(
        classify(&forbidden, expect, Some(&KEY)).unwrap(),
        Incoming::Response(Response::Error { code: 403, reason, .. }) if reason == "Because"
    ));
    let signed = error(
        CREATE_PERMMISSION,
        &tid,
        403,
        vec![],
        Some(server_key(PASSWORD)),
    );
    assert!(matches!(
        classify(&signed, expect, Some(&KEY)).unwrap(),
        Incoming::Response(Response::Error { code: 403, .. })
    ));
    let forged = error(CREATE_PERMMISSION, &tid, 403, vec![], Some(server_key("x")));
    assert!(matches!(
        classify(&forged, expect, Some(&KEY)).unwrap(),
        Incoming::Discard(_)
    ));
    let no_code = message(
        CREATE_PERMMISSION,
        MessageClass::ErrorResponse,
        &tid,
        vec![],
        None,
    );
    assert!(matches!(
        classify(&no_code, expect, None),
        Err(TurnError::Protocol(_))
    ));
}

#[test]
fn data_indications_are_parsed() {
    let indication = data_indication(&[6; 12], peer(), b"payload");
    assert!(matches!(
        classify(&indication, None, None).unwrap(),
        Incoming::Data { peer: p, data } if p == peer() && data == b"payload"
    ));
    // Also while a transaction waits, whatever its id.
    assert!(matches!(
        classify(&indication, Some((&[6; 12], ALLOCATE)), Some(&KEY)).unwrap(),
        Incoming::Data { .. }
    ));
    let empty = message(DATA, MessageClass::Indication, &[6; 12], vec![], None);
    assert!(matches!(
        classify(&empty, None, None).unwrap(),
        Incoming::Discard(_)
    ));
}

#[test]
fn allocate_success_needs_relayed_mapped_and_lifetime() {
    let reply = decode(&message(
        ALLOCATE,
        MessageClass::SuccessResponse,
        &[1; 12],
        vec![
            XorRelayedAddress::from(relayed()).into(),
            LifeTime::new(600).into(),
        ],
        None,
    ));
    assert!(matches!(
        allocation_from(&reply),
        Err(TurnError::Protocol(e)) if e.contains("XOR-MAPPED-ADDRESS")
    ));
}

#[test]
fn bad_usernames_are_refused_locally() {
    assert!(matches!(
        Auth::new(&"u".repeat(600), PASSWORD),
        Err(TurnError::Credential(_))
    ));
}

/// What a scripted server does with one request: the datagrams it answers with.
type Step = Box<dyn FnOnce(&StunMessage, &[u8]) -> Vec<Vec<u8>> + Send>;

/// A scripted TURN server on loopback: the n-th request it receives gets the n-th
/// step's answers.
async fn scripted(script: Vec<Step>) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut buf = vec![0u8; 2048];
        for step in script {
            let (len, from) = tokio::time::timeout(TIMEOUT, socket.recv_from(&mut buf))
                .await
                .expect("the client sent its next request")
                .unwrap();
            let request = &buf[..len];
            for datagram in step(&decode(request), request) {
                socket.send_to(&datagram, from).await.unwrap();
            }
        }
    });
    (addr, task)
}

fn nonce_of(m: &StunMessage) -> Option<String> {
    m.get::<Nonce>()
        .map(|n| n.as_nonce().unwrap().as_str().to_owned())
}

#[tokio::test]
async fn allocation_with_a_scripted_server() {
    let early_peer: SocketAddr = "203.0.113.9:7000".parse().unwrap();
    let script: Vec<Step> = vec![
        Box::new(|m, _| {
            assert!(m.get::<UserName>().is_none());
            vec![error(ALLOCATE, &tid_of(m), 401, challenge("n1"), None)]
        }),
        Box::new(|m, raw| {
            assert_eq!(nonce_of(m).as_deref(), Some("n1"));
            assert!(wire::verify_integrity(raw, IntegrityKind::Sha1, &KEY));
            let stale = vec![Nonce::new("n2").unwrap().into()];
            vec![error(ALLOCATE, &tid_of(m), 438, stale, None)]
        }),
        Box::new(move |m, raw| {
            assert_eq!(nonce_of(m).as_deref(), Some("n2"));
            assert!(wire::verify_integrity(raw, IntegrityKind::Sha1, &KEY));
            let tid = tid_of(m);
            vec![
                allocate_success(&[0; 12], Some(server_key(PASSWORD))),
                allocate_success(&tid, Some(server_key("forged"))),
                data_indication(&[2; 12], early_peer, b"early"),
                allocate_success(&tid, Some(server_key(PASSWORD))),
            ]
        }),
        Box::new(|m, _| {
            assert_eq!(m.method(), CREATE_PERMMISSION);
            let to = m.get::<XorPeerAddress>().unwrap();
            let to = to.as_xor_peer_address().unwrap().socket_address().ip();
            assert_eq!(to, peer().ip());
            vec![error(CREATE_PERMMISSION, &tid_of(m), 403, vec![], None)]
        }),
        Box::new(|m, _| {
            assert_eq!(m.method(), REFRESH);
            assert_eq!(m.get::<LifeTime>().unwrap().as_life_time().unwrap(), &0);
            vec![error(REFRESH, &tid_of(m), 437, vec![], None)]
        }),
    ];
    let (server, task) = scripted(script).await;
    let mut allocation = allocate(server, USER, PASSWORD, TIMEOUT).await.unwrap();
    assert_eq!(allocation.relayed(), relayed());
    assert_eq!(allocation.mapped(), mapped());
    assert_eq!(allocation.lifetime(), Duration::from_secs(600));
    assert_eq!(allocation.realm(), Some(REALM));
    assert_eq!(allocation.server(), server);
    // The Data indication that came while Allocate waited was kept.
    assert_eq!(
        allocation.recv(TIMEOUT).await.unwrap(),
        (early_peer, b"early".to_vec())
    );
    assert!(matches!(
        allocation.create_permission(peer().ip(), TIMEOUT).await,
        Err(TurnError::Refused { code: 403, .. })
    ));
    // 437 to a deletion: already gone.
    assert_eq!(
        allocation.refresh(0, TIMEOUT).await.unwrap(),
        Duration::ZERO
    );
    assert!(matches!(
        allocation.send(peer(), b"x").await,
        Err(TurnError::Released)
    ));
    assert!(matches!(
        allocation.create_permission(peer().ip(), TIMEOUT).await,
        Err(TurnError::Released)
    ));
    task.await.unwrap();
}

#[tokio::test]
async fn wrong_credentials_are_unauthorized() {
    let script: Vec<Step> = vec![
        Box::new(|m, _| vec![error(ALLOCATE, &tid_of(m), 401, challenge("n1"), None)]),
        Box::new(|m, _| vec![error(ALLOCATE, &tid_of(m), 401, challenge("n1"), None)]),
    ];
    let (server, task) = scripted(script).await;
    let err = allocate(server, USER, "wrong", TIMEOUT).await.unwrap_err();
    assert!(
        matches!(&err, TurnError::Unauthorized { code: 401, reason } if reason == "Because"),
        "{err}"
    );
    task.await.unwrap();
}

#[tokio::test]
async fn a_silent_server_times_out_within_the_callers_bound() {
    let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let server = silent.local_addr().unwrap();
    let started = Instant::now();
    let err = allocate(server, USER, PASSWORD, Duration::from_millis(300))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            TurnError::Timeout {
                operation: "Allocate response",
                ..
            }
        ),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    // Retransmitted at 0 and 500 ms: one transmission within 300 ms.
    let mut buf = [0u8; 512];
    let (len, _) = silent.recv_from(&mut buf).await.unwrap();
    assert_eq!(decode(&buf[..len]).method(), ALLOCATE);
}
