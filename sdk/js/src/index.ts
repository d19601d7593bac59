/**
 * @commucat/sdk: verified discovery, P2P assist and the hybrid post-quantum signaling
 * session of a CommuCat daemon (docs/protocol.md), for browsers and Node ≥ 20.
 */
export { getServerInfo, verifyServerInfo, keyBundleText, parseServerInfo } from './discovery.js';
export type { ServerInfo, ServerInfoOptions, NoiseKeyInfo, PostQuantumInfo } from './discovery.js';
export { getAssist, assistRefreshDelayMs } from './assist.js';
export type { AssistRequest, AssistResponse, AssistOptions, IceServer } from './assist.js';
export { connect } from './connect.js';
export type { ConnectOptions } from './connect.js';
export { Session } from './session.js';
export type { SessionEvents, SessionOptions, ReconnectOptions } from './session.js';
export type { LinkOptions } from './link.js';
export type { Certificate } from './certificate.js';
export { certificateText, verifyCertificate } from './certificate.js';
export { CommuCatError, closeCodeToError } from './errors.js';
export type { ErrorCode } from './errors.js';
export { deviceIdOf, generateDeviceKey } from './keystore.js';
export type { DeviceKeySource, DeviceKeyStore } from './keystore.js';
export { indexedDbKeyStore } from './keystore-browser.js';
export type { WebSocketLike, WebSocketConstructor } from './channel.js';
export type { Pattern, HandshakeVersion, ServerHello } from './handshake.js';
export { ClientHandshake, encodeHeader, parseServerHello } from './handshake.js';
export { deriveSessionKeys, ratchetKey } from './kdf.js';
export type { SessionKeys } from './kdf.js';
export { Sealer, Opener, clientTransport, MAX_CIPHERTEXT_LEN, REKEY_INTERVAL } from './transport.js';
export { connectPeer, isPeerSignal, PeerConnection, PEER_SIGNAL_TAG } from './peer.js';
export type { PeerOptions, PeerEvents, PeerPath, CandidatePair } from './peer.js';
// Types that the exported signatures name (so that the reference documents them too).
export type { FetchLike } from './http.js';
export type { ClientTransport } from './transport.js';
export type { ClientEstablished, ClientHandshakeParams } from './handshake.js';
export type { CommuCatErrorDetails } from './errors.js';
export type { Listener } from './emitter.js';
