//! The request engine: one socket to one TURN server, long-term credentials (the 401
//! and 438 dance), retransmission on the RFC 8489 schedule, and queued indications.

use super::*;

pub(super) struct Auth {
    pub(super) username: String,
    pub(super) password: Zeroizing<String>,
    /// `None` until the server asks for credentials (401).
    pub(super) session: Option<Session>,
}

pub(super) struct Session {
    pub(super) realm: Realm,
    pub(super) nonce: Nonce,
    /// MD5(username ":" realm ":" password), RFC 8489 §9.2.2.
    pub(super) key: Zeroizing<Vec<u8>>,
}

impl Auth {
    pub(super) fn new(username: &str, password: &str) -> Result<Self, TurnError> {
        UserName::new(username).map_err(|e| TurnError::Credential(format!("username: {e}")))?;
        Ok(Self {
            username: username.to_owned(),
            password: Zeroizing::new(password.to_owned()),
            session: None,
        })
    }

    /// Takes NONCE (and REALM, required the first time) from a 401 or 438.
    pub(super) fn challenge(&mut self, reply: &StunMessage, code: u16) -> Result<(), TurnError> {
        let nonce = reply
            .get::<Nonce>()
            .and_then(|a| a.as_nonce().ok())
            .cloned()
            .ok_or_else(|| TurnError::Protocol(format!("{code} response without NONCE")))?;
        let realm = reply
            .get::<Realm>()
            .and_then(|a| a.as_realm().ok())
            .cloned()
            .or_else(|| self.session.as_ref().map(|s| s.realm.clone()))
            .ok_or_else(|| TurnError::Protocol(format!("{code} response without REALM")))?;
        let key = HMACKey::new_long_term(
            &self.username,
            realm.as_str(),
            self.password.as_str(),
            Algorithm::from(AlgorithmId::MD5),
        )
        .map_err(|e| TurnError::Credential(format!("password or realm: {e}")))?;
        self.session = Some(Session {
            realm,
            nonce,
            key: Zeroizing::new(key.as_bytes().to_vec()),
        });
        Ok(())
    }
}

/// The socket, the server, and the Data indications received while a request waited.
pub(super) struct Link {
    pub(super) socket: UdpSocket,
    pub(super) server: SocketAddr,
    pub(super) queued: VecDeque<(SocketAddr, Vec<u8>)>,
    pub(super) buf: Vec<u8>,
}

impl Link {
    pub(super) fn is_server(&self, from: SocketAddr) -> bool {
        from.port() == self.server.port()
            && from.ip().to_canonical() == self.server.ip().to_canonical()
    }

    /// One datagram, or `None` once `until` has passed.
    pub(super) async fn recv_until(
        &mut self,
        until: Instant,
    ) -> Result<Option<(usize, SocketAddr)>, TurnError> {
        match tokio::time::timeout_at(until.into(), self.socket.recv_from(&mut self.buf)).await {
            Ok(received) => Ok(Some(received?)),
            Err(_) => Ok(None),
        }
    }

    pub(super) fn queue(&mut self, peer: SocketAddr, data: Vec<u8>) {
        if self.queued.len() == MAX_QUEUED {
            self.queued.pop_front();
        }
        self.queued.push_back((peer, data));
    }

    /// Sends `request` and retransmits it until its response arrives or `deadline`.
    pub(super) async fn exchange(
        &mut self,
        request: &[u8],
        expect: (&[u8; 12], MessageMethod),
        key: Option<&[u8]>,
        deadline: Instant,
    ) -> Result<Response, TurnError> {
        let started = Instant::now();
        let mut rto = INITIAL_RTO;
        for transmission in 1..=MAX_TRANSMISSIONS {
            self.socket.send_to(request, self.server).await?;
            let wait = if transmission == MAX_TRANSMISSIONS {
                rto * FINAL_WAIT_RTOS
            } else {
                rto
            };
            let until = (Instant::now() + wait).min(deadline);
            while let Some((len, from)) = self.recv_until(until).await? {
                if !self.is_server(from) {
                    continue;
                }
                match classify(&self.buf[..len], Some(expect), key)? {
                    Incoming::Response(response) => return Ok(response),
                    Incoming::Data { peer, data } => self.queue(peer, data),
                    Incoming::Discard(why) => {
                        tracing::debug!(server = %self.server, why, "TURN datagram discarded");
                    }
                }
            }
            if Instant::now() >= deadline {
                break;
            }
            rto *= 2;
        }
        Err(TurnError::Timeout {
            server: self.server,
            operation: response_name(expect.1),
            waited: started.elapsed(),
        })
    }
}

/// One request/response exchange with the authentication dance around it.
pub(super) async fn transact(
    link: &mut Link,
    auth: &mut Auth,
    method: MessageMethod,
    attributes: &[StunAttribute],
    deadline: Instant,
) -> Result<StunMessage, TurnError> {
    let mut last = (0, String::new());
    for _ in 0..MAX_ATTEMPTS {
        let tid = new_transaction_id();
        let request = encode_request(method, &tid, attributes, auth)?;
        let key = auth.session.as_ref().map(|s| s.key.clone());
        let response = link
            .exchange(
                &request,
                (&tid, method),
                key.as_deref().map(Vec::as_slice),
                deadline,
            )
            .await?;
        let (code, reason, reply) = match response {
            Response::Success(reply) => return Ok(reply),
            Response::Error {
                code,
                reason,
                message,
            } => (code, reason, message),
        };
        match code {
            401 if auth.session.is_none() => auth.challenge(&reply, code)?,
            438 => auth.challenge(&reply, code)?,
            401 | 441 => return Err(TurnError::Unauthorized { code, reason }),
            _ => return Err(TurnError::Refused { code, reason }),
        }
        last = (code, reason);
    }
    let (code, reason) = last;
    Err(TurnError::Unauthorized { code, reason })
}

pub(super) fn response_name(method: MessageMethod) -> &'static str {
    match method {
        ALLOCATE => "Allocate response",
        REFRESH => "Refresh response",
        CREATE_PERMMISSION => "CreatePermission response",
        _ => "response",
    }
}

pub(super) fn new_transaction_id() -> [u8; 12] {
    let mut tid = [0u8; 12];
    rand::rng().fill(&mut tid);
    tid
}
