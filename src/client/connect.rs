//! Client side of `/api/connect`: fetch and verify server-info, open the WebSocket
//! (ws:// for http base URLs, wss:// with rustls and the webpki roots for https), run the
//! hybrid handshake, then exchange typed messages over the encrypted transport.

use std::collections::VecDeque;
use std::io::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt as _, StreamExt as _};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};
use zeroize::Zeroizing;

use super::http::{ClientError, fetch_server_info, http_client, join};
use crate::crypto::handshake::DEFAULT_PROLOGUE;
use crate::crypto::transport::MAX_CIPHERTEXT_LEN;
use crate::crypto::{
    ClientHandshake, ClientParams, HandshakeError, Pattern, ServerHello, Transport, TransportError,
    Version,
};
use crate::discovery::ServerInfo;
use crate::signal::messages::{ClientMessage, ServerMessage};

/// The client's WebSocket.
pub type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error(transparent)]
    Http(#[from] ClientError),
    #[error("invalid URL {0:?}: expected http://host:port or https://host:port")]
    Url(String),
    #[error("server-info lists no usable Noise key{0}")]
    NoKey(String),
    #[error("the server has post-quantum handshakes off; use --no-pq (version 1)")]
    PqUnavailable,
    #[error("server-info has an invalid {0}")]
    BadServerInfo(&'static str),
    #[error("WebSocket: {0}")]
    WebSocket(String),
    #[error("handshake failed")]
    Handshake(#[from] HandshakeError),
    #[error("transport failed")]
    Transport(#[from] TransportError),
    #[error("server closed the connection{}: {reason}", code.map(|c| format!(" with code {c}")).unwrap_or_default())]
    Closed { code: Option<u16>, reason: String },
    #[error("unexpected message from the server: {0}")]
    Protocol(String),
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("device key file {path}: {reason}")]
    KeyFile { path: String, reason: String },
}

impl ConnectError {
    /// The WebSocket close code, when the server closed the connection.
    pub fn close_code(&self) -> Option<u16> {
        match self {
            Self::Closed { code, .. } => *code,
            _ => None,
        }
    }
}

/// How to connect.
#[derive(Clone)]
pub struct ConnectOptions {
    pub pattern: Pattern,
    pub version: Version,
    pub pq: bool,
    /// Which Noise key of the server; `None` = the newest listed.
    pub key_version: Option<u32>,
    /// The device's X25519 secret; `None` = a fresh one for this connection.
    pub device_secret: Option<Zeroizing<[u8; 32]>>,
    /// Bound on connecting and on the handshake.
    pub timeout: Duration,
    /// The server's `[crypto] prologue` (assist publishes it as `noise.prologue_hex`).
    pub prologue: Vec<u8>,
    /// The server's ML-DSA-65 identity key (`device_ca_public`, hex) known out of band.
    /// The key bundle signature only proves the document is self-consistent; a pin makes
    /// it authenticate the server's Noise and KEM keys.
    pub server_identity: Option<String>,
    /// Access token for a daemon with `[auth] required` (sent as `Authorization: Bearer`).
    pub access_token: Option<String>,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        Self {
            pattern: Pattern::Xk,
            version: Version::V2,
            pq: true,
            key_version: None,
            device_secret: None,
            timeout: Duration::from_secs(10),
            prologue: DEFAULT_PROLOGUE.to_vec(),
            server_identity: None,
            access_token: None,
        }
    }
}

impl std::fmt::Debug for ConnectOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectOptions")
            .field("pattern", &self.pattern)
            .field("version", &self.version)
            .field("pq", &self.pq)
            .field("key_version", &self.key_version)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// An established session.
pub struct Connection {
    socket: Socket,
    transport: Transport,
    pending: VecDeque<ServerMessage>,
    pub hello: ServerHello,
    pub session_id: String,
    pub device_id: String,
    pub pattern: Pattern,
    pub version: Version,
    pub pq: bool,
    pub key_version: u32,
    /// TCP connect and WebSocket upgrade.
    pub connect_time: Duration,
    /// From sending message 1 to the keys (message 3 sent for XK), crypto included.
    pub handshake_time: Duration,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("session_id", &self.session_id)
            .field("device_id", &self.device_id)
            .field("pq", &self.pq)
            .finish_non_exhaustive()
    }
}

/// The device id (hex X25519 public key) of `secret`.
pub fn device_id(secret: &[u8; 32]) -> String {
    let secret = x25519_dalek::StaticSecret::from(*secret);
    hex::encode(x25519_dalek::PublicKey::from(&secret).as_bytes())
}

/// A fresh device secret.
pub fn fresh_device_secret() -> Zeroizing<[u8; 32]> {
    let mut secret = Zeroizing::new([0u8; 32]);
    rand::fill(&mut secret[..]);
    secret
}

/// Loads the device secret from `path` (64 hex digits), or creates the file with a
/// fresh secret, mode 0600.
pub fn load_or_create_device_key(path: &Path) -> Result<Zeroizing<[u8; 32]>, ConnectError> {
    let err = |reason: String| ConnectError::KeyFile {
        path: path.display().to_string(),
        reason,
    };
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let text = Zeroizing::new(text);
            let mut secret = Zeroizing::new([0u8; 32]);
            hex::decode_to_slice(text.trim(), &mut secret[..])
                .map_err(|_| err("expected 64 hex digits".into()))?;
            Ok(secret)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            use std::os::unix::fs::OpenOptionsExt as _;
            let secret = fresh_device_secret();
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(|e| err(e.to_string()))?;
            let text = Zeroizing::new(hex::encode(*secret));
            writeln!(file, "{}", text.as_str())
                .and_then(|()| file.sync_all())
                .map_err(|e| err(e.to_string()))?;
            Ok(secret)
        }
        Err(e) => Err(err(e.to_string())),
    }
}

/// `ws://host:port/api/connect` for `http://host:port`, `wss://` for `https://`.
pub fn connect_url(base: &str) -> Result<String, ConnectError> {
    let http_url = join(base, "/api/connect").map_err(|_| ConnectError::Url(base.into()))?;
    if let Some(rest) = http_url.strip_prefix("https://") {
        Ok(format!("wss://{rest}"))
    } else if let Some(rest) = http_url.strip_prefix("http://") {
        Ok(format!("ws://{rest}"))
    } else {
        Err(ConnectError::Url(base.into()))
    }
}

/// Client WebSocket settings: small buffers (a load test opens thousands) and the
/// contract's message limit.
pub fn websocket_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
        .max_message_size(Some(MAX_CIPHERTEXT_LEN))
        .max_frame_size(Some(MAX_CIPHERTEXT_LEN))
}

fn tls_connector() -> Result<Connector, ConnectError> {
    let roots = rustls::RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| ConnectError::WebSocket(e.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(Connector::Rustls(Arc::new(config)))
}

/// Opens the WebSocket to `url` (ws:// or wss://), bounded by `timeout`, presenting
/// `access_token` as a bearer token when given.
pub async fn open_socket(
    url: &str,
    access_token: Option<&str>,
    timeout: Duration,
) -> Result<Socket, ConnectError> {
    let connector = if url.starts_with("wss://") {
        Some(tls_connector()?)
    } else {
        Some(Connector::Plain)
    };
    let mut request = url
        .into_client_request()
        .map_err(|e| ConnectError::WebSocket(e.to_string()))?;
    if let Some(token) = access_token {
        let value = format!("Bearer {token}").parse().map_err(|_| {
            ConnectError::WebSocket("the access token is not a valid header".into())
        })?;
        request.headers_mut().insert("authorization", value);
    }
    let connecting = tokio_tungstenite::connect_async_tls_with_config(
        request,
        Some(websocket_config()),
        true,
        connector,
    );
    match tokio::time::timeout(timeout, connecting).await {
        Ok(Ok((socket, _response))) => Ok(socket),
        Ok(Err(e)) => Err(ConnectError::WebSocket(e.to_string())),
        Err(_) => Err(ConnectError::Timeout(timeout)),
    }
}

/// Fetches `/api/server-info` (signature verified) and connects.
pub async fn connect(base: &str, options: ConnectOptions) -> Result<Connection, ConnectError> {
    let client = http_client(options.timeout)?;
    let info = fetch_server_info(&client, base, options.server_identity.as_deref()).await?;
    connect_with_info(base, &info, options).await
}

/// The handshake parameters for `options` against a verified `info`.
pub fn client_params(
    info: &ServerInfo,
    options: &ConnectOptions,
    device_secret: Zeroizing<[u8; 32]>,
) -> Result<ClientParams, ConnectError> {
    let key = match options.key_version {
        Some(v) => info
            .noise_keys
            .iter()
            .find(|k| k.version == v)
            .ok_or_else(|| ConnectError::NoKey(format!(" with version {v}")))?,
        None => info
            .noise_keys
            .last()
            .ok_or_else(|| ConnectError::NoKey(String::new()))?,
    };
    let mut server_static_public = [0u8; 32];
    hex::decode_to_slice(&key.public, &mut server_static_public)
        .map_err(|_| ConnectError::BadServerInfo("Noise public key"))?;
    let server_kem_public = if options.pq {
        let kem_hex = info
            .post_quantum
            .kem_public_hex
            .as_deref()
            .filter(|_| info.post_quantum.enabled);
        match kem_hex {
            Some(h) => {
                Some(hex::decode(h).map_err(|_| ConnectError::BadServerInfo("KEM public key"))?)
            }
            None => return Err(ConnectError::PqUnavailable),
        }
    } else {
        None
    };
    Ok(ClientParams {
        pattern: options.pattern,
        version: options.version,
        pq: options.pq,
        key_version: key.version,
        server_static_public,
        server_kem_public,
        prologue: options.prologue.clone(),
        client_static_secret: device_secret,
    })
}

/// Connects with an already verified server-info (a load tool fetches it once).
pub async fn connect_with_info(
    base: &str,
    info: &ServerInfo,
    options: ConnectOptions,
) -> Result<Connection, ConnectError> {
    let secret = options
        .device_secret
        .clone()
        .unwrap_or_else(fresh_device_secret);
    let device_id = device_id(&secret);
    let params = client_params(info, &options, secret)?;
    let handshake = ClientHandshake::new(params, &mut rand::rng())?;
    let url = connect_url(base)?;
    let started = Instant::now();
    let mut socket = open_socket(&url, options.access_token.as_deref(), options.timeout).await?;
    let connect_time = started.elapsed();
    let deadline = tokio::time::Instant::now() + options.timeout;
    let run = async {
        let started = Instant::now();
        socket
            .send(Message::Binary(handshake.message1().to_vec().into()))
            .await
            .map_err(|e| ConnectError::WebSocket(e.to_string()))?;
        let message2 = receive_binary(&mut socket).await?;
        let established = handshake.read_message2(&message2)?;
        if let Some(message3) = &established.message3 {
            socket
                .send(Message::Binary(message3.clone().into()))
                .await
                .map_err(|e| ConnectError::WebSocket(e.to_string()))?;
        }
        let handshake_time = started.elapsed();
        let transport = Transport::client(&established.keys);
        let mut connection = Connection {
            socket,
            transport,
            pending: VecDeque::new(),
            session_id: established.hello.session_id.clone(),
            pq: established.hello.pq,
            key_version: established.hello.key_version,
            hello: established.hello,
            device_id,
            pattern: options.pattern,
            version: options.version,
            connect_time,
            handshake_time,
        };
        connection.await_welcome().await?;
        Ok(connection)
    };
    match tokio::time::timeout_at(deadline, run).await {
        Ok(result) => result,
        Err(_) => Err(ConnectError::Timeout(options.timeout)),
    }
}

async fn receive_binary<S>(socket: &mut S) -> Result<Vec<u8>, ConnectError>
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    loop {
        match socket.next().await {
            Some(Ok(Message::Binary(b))) => return Ok(b.to_vec()),
            Some(Ok(Message::Close(frame))) => {
                return Err(ConnectError::Closed {
                    code: frame.as_ref().map(|f| u16::from(f.code)),
                    reason: frame.map(|f| f.reason.to_string()).unwrap_or_default(),
                });
            }
            Some(Ok(Message::Text(_))) => {
                return Err(ConnectError::Protocol("text frame".into()));
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(ConnectError::WebSocket(e.to_string())),
            None => {
                return Err(ConnectError::Closed {
                    code: None,
                    reason: "connection ended".into(),
                });
            }
        }
    }
}

/// Ping id the library uses to confirm IK keys; applications may reuse it freely.
const CONFIRM_PING_ID: u64 = 0;

impl Connection {
    /// Reads `welcome` (server message 0). For IK, then sends a ping: the server
    /// registers an IK session only once a client message proves the keys, and the
    /// matching pong says that has happened.
    async fn await_welcome(&mut self) -> Result<(), ConnectError> {
        match self.read_message().await? {
            ServerMessage::Welcome {
                session_id,
                device_id,
            } if session_id == self.session_id && device_id == self.device_id => {}
            other => return Err(ConnectError::Protocol(format!("{other:?} before welcome"))),
        }
        if self.pattern == Pattern::Ik {
            self.send(&ClientMessage::Ping {
                id: CONFIRM_PING_ID.into(),
            })
            .await?;
            loop {
                match self.read_message().await? {
                    ServerMessage::Pong { id } if id.as_u64() == Some(CONFIRM_PING_ID) => break,
                    other => self.pending.push_back(other),
                }
            }
        }
        Ok(())
    }

    /// Sends one message.
    pub async fn send(&mut self, message: &ClientMessage) -> Result<(), ConnectError> {
        self.send_plaintext(&message.to_json()).await
    }

    /// Sends arbitrary plaintext as one transport message (for tests of the server).
    pub async fn send_plaintext(&mut self, plaintext: &[u8]) -> Result<(), ConnectError> {
        let ciphertext = self.transport.seal(plaintext)?;
        self.socket
            .send(Message::Binary(ciphertext.into()))
            .await
            .map_err(|e| ConnectError::WebSocket(e.to_string()))
    }

    /// Queues one message without flushing (pipelining); [`Connection::flush`] sends.
    pub async fn feed(&mut self, message: &ClientMessage) -> Result<(), ConnectError> {
        let ciphertext = self.transport.seal(&message.to_json())?;
        self.socket
            .feed(Message::Binary(ciphertext.into()))
            .await
            .map_err(|e| ConnectError::WebSocket(e.to_string()))
    }

    pub async fn flush(&mut self) -> Result<(), ConnectError> {
        self.socket
            .flush()
            .await
            .map_err(|e| ConnectError::WebSocket(e.to_string()))
    }

    /// The next message from the server; a close is [`ConnectError::Closed`].
    pub async fn recv(&mut self) -> Result<ServerMessage, ConnectError> {
        match self.pending.pop_front() {
            Some(m) => Ok(m),
            None => self.read_message().await,
        }
    }

    async fn read_message(&mut self) -> Result<ServerMessage, ConnectError> {
        let ciphertext = receive_binary(&mut self.socket).await?;
        let plaintext = self.transport.open(&ciphertext)?;
        serde_json::from_slice(&plaintext).map_err(|e| ConnectError::Protocol(e.to_string()))
    }

    /// Sends a WebSocket ping (keeps an otherwise quiet session alive).
    pub async fn keepalive(&mut self) -> Result<(), ConnectError> {
        self.socket
            .send(Message::Ping(Default::default()))
            .await
            .map_err(|e| ConnectError::WebSocket(e.to_string()))
    }

    /// The underlying socket (for tests that send raw frames).
    pub fn socket_mut(&mut self) -> &mut Socket {
        &mut self.socket
    }

    /// Separate sending and receiving halves, e.g. to pipeline from one task while
    /// another reads.
    pub fn split(self) -> (ConnectionSender, ConnectionReceiver) {
        let (sink, stream) = self.socket.split();
        let (sender, receiver) = self.transport.split();
        (
            ConnectionSender { sink, sender },
            ConnectionReceiver {
                stream,
                receiver,
                pending: self.pending,
            },
        )
    }

    /// Closes with 1000 and waits (bounded) for the server's close reply.
    pub async fn close(mut self) -> Result<(), ConnectError> {
        let closing = async {
            self.socket
                .close(None)
                .await
                .map_err(|e| ConnectError::WebSocket(e.to_string()))?;
            while let Some(Ok(_)) = self.socket.next().await {}
            Ok(())
        };
        tokio::time::timeout(Duration::from_secs(5), closing)
            .await
            .unwrap_or(Err(ConnectError::Timeout(Duration::from_secs(5))))
    }
}

/// Sending half of a split [`Connection`].
pub struct ConnectionSender {
    sink: futures_util::stream::SplitSink<Socket, Message>,
    sender: crate::crypto::TransportSender,
}

impl ConnectionSender {
    /// Queues one message without flushing.
    pub async fn feed(&mut self, message: &ClientMessage) -> Result<(), ConnectError> {
        let ciphertext = self.sender.seal(&message.to_json())?;
        self.sink
            .feed(Message::Binary(ciphertext.into()))
            .await
            .map_err(|e| ConnectError::WebSocket(e.to_string()))
    }

    pub async fn send(&mut self, message: &ClientMessage) -> Result<(), ConnectError> {
        self.feed(message).await?;
        self.flush().await
    }

    pub async fn flush(&mut self) -> Result<(), ConnectError> {
        self.sink
            .flush()
            .await
            .map_err(|e| ConnectError::WebSocket(e.to_string()))
    }
}

/// Receiving half of a split [`Connection`].
pub struct ConnectionReceiver {
    stream: futures_util::stream::SplitStream<Socket>,
    receiver: crate::crypto::TransportReceiver,
    pending: VecDeque<ServerMessage>,
}

impl ConnectionReceiver {
    /// The next message from the server; a close is [`ConnectError::Closed`].
    pub async fn recv(&mut self) -> Result<ServerMessage, ConnectError> {
        if let Some(m) = self.pending.pop_front() {
            return Ok(m);
        }
        let ciphertext = receive_binary(&mut self.stream).await?;
        let plaintext = self.receiver.open(&ciphertext)?;
        serde_json::from_slice(&plaintext).map_err(|e| ConnectError::Protocol(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_urls_follow_the_base_scheme() {
        assert_eq!(
            connect_url("http://127.0.0.1:8080").unwrap(),
            "ws://127.0.0.1:8080/api/connect"
        );
        assert_eq!(
            connect_url("https://example.org/").unwrap(),
            "wss://example.org/api/connect"
        );
        assert!(connect_url("ftp://example.org").is_err());
    }

    #[test]
    fn device_key_file_is_created_0600_and_reloaded() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = std::env::temp_dir().join(format!("commucat-key-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("device.key");
        let first = load_or_create_device_key(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let second = load_or_create_device_key(&path).unwrap();
        assert_eq!(*first, *second);
        assert_eq!(device_id(&first).len(), 64);
        std::fs::write(&path, "zz").unwrap();
        assert!(load_or_create_device_key(&path).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
