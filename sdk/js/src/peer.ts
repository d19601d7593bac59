/**
 * `connectPeer`: an RTCPeerConnection to another device, signaled over the session's
 * post-quantum channel, with the daemon's `relay` as the fallback path behind the same
 * send/receive API.
 *
 * Offers, answers and candidates travel as `signal` bodies tagged `"commucat-peer": 1`.
 * Both sides may start: perfect negotiation (the W3C pattern), with the politeness fixed
 * by comparing device ids so that the two sides always disagree. The data channel is
 * negotiated (id 0) so that both sides create it and neither waits for the other's.
 * Rollbacks are explicit, and descriptions are created before they are set, so that
 * older implementations without implicit `setLocalDescription()` work too.
 */
import { randomBytes } from '@noble/hashes/utils.js';
import { getAssist, type IceServer } from './assist.js';
import { bytesToHex } from './bytes.js';
import { Emitter } from './emitter.js';
import { CommuCatError } from './errors.js';
import type { Session } from './session.js';

/** Marks the SDK's own signal bodies, so applications can share the channel. */
export const PEER_SIGNAL_TAG = 'commucat-peer';
const MAX_MESSAGE = 16_384;

export type PeerPath = 'connecting' | 'p2p' | 'relay' | 'closed';

/** Candidate types of the selected ICE pair (`host`, `srflx`, `prflx`, `relay`). */
export interface CandidatePair {
  local: string;
  remote: string;
}

export interface PeerOptions {
  /** An RTCPeerConnection constructor where there is no global one. */
  RTCPeerConnection?: new (config: RTCConfiguration) => RTCPeerConnection;
  /** ICE servers; default `session.assist`'s, or a fresh `getAssist`. */
  iceServers?: IceServer[];
  /** `"relay"` forces TURN. */
  iceTransportPolicy?: RTCIceTransportPolicy;
  /** The peer's first signal, when it started and its signal already arrived. */
  signal?: unknown;
  /** Give ICE this long (ms, default 15 000), then use the relay path. */
  connectTimeoutMs?: number;
  /** Fall back to the daemon's relay when ICE cannot connect (default true). */
  relayFallback?: boolean;
  /** The base URL for `getAssist` when the session has no advice (default: none, then required). */
  assistUrl?: string;
}

export interface PeerEvents {
  /** The path changed: `p2p` once the data channel opens, `relay` on fallback. */
  path: { path: PeerPath; candidates?: CandidatePair };
  /** Bytes from the peer, whichever path they took. */
  message: Uint8Array;
  error: CommuCatError;
  close: { reason: string };
}

/** Whether a `signal` body is one of `connectPeer`'s (to route it to a new PeerConnection). */
export function isPeerSignal(body: unknown): boolean {
  return typeof body === 'object' && body !== null && (body as Record<string, unknown>)[PEER_SIGNAL_TAG] === 1;
}

export class PeerConnection extends Emitter<PeerEvents> {
  readonly peerId: string;
  readonly pc: RTCPeerConnection;
  private readonly session: Session;
  private readonly polite: boolean;
  private readonly relayFallback: boolean;
  private readonly channel: RTCDataChannel;
  private makingOffer = false;
  private ignoreOffer = false;
  private currentPath: PeerPath = 'connecting';
  private candidatePair: CandidatePair | undefined;
  private restarted = false;
  private timer: ReturnType<typeof setTimeout> | undefined;
  private queue: Promise<void> = Promise.resolve();
  private readonly unsubscribe: (() => void)[] = [];
  /** This connection's id: a `bye` must name it, so one for an earlier connection is ignored. */
  private readonly cid = bytesToHex(randomBytes(8));
  private remoteCid: string | undefined;

  /** Use `connectPeer`. `early` are the peer's signals that arrived before this object. */
  constructor(session: Session, peerId: string, pc: RTCPeerConnection, options: PeerOptions, early: unknown[] = []) {
    super();
    this.session = session;
    this.peerId = peerId;
    this.pc = pc;
    this.polite = session.deviceId < peerId;
    this.relayFallback = options.relayFallback !== false;
    this.channel = pc.createDataChannel('commucat', { negotiated: true, id: 0 });
    this.channel.binaryType = 'arraybuffer';
    this.channel.onopen = () => void this.onChannelOpen();
    this.channel.onmessage = (event: MessageEvent) => this.onChannelMessage(event.data);
    this.channel.onclose = () => {
      if (this.currentPath === 'p2p') this.fallBack('data channel closed');
    };
    pc.onicecandidate = (event: RTCPeerConnectionIceEvent) => {
      if (event.candidate) this.sendSignal({ candidate: event.candidate.toJSON() });
    };
    pc.onnegotiationneeded = () => void this.negotiate();
    pc.oniceconnectionstatechange = () => this.onIceState();
    this.unsubscribe.push(
      session.on('signal', ({ from, body }) => {
        if (from === peerId && isPeerSignal(body)) this.enqueue(body as Record<string, unknown>);
      }),
      session.on('relay', ({ from, data }) => {
        if (from === peerId) this.emit('message', data);
      }),
      session.on('close', ({ willReconnect }) => {
        if (!willReconnect) this.close('session closed');
      }),
    );
    for (const body of early) {
      if (isPeerSignal(body)) this.enqueue(body as Record<string, unknown>);
    }
    this.timer = setTimeout(() => {
      if (this.currentPath === 'connecting') this.fallBack('ICE did not connect in time');
    }, options.connectTimeoutMs ?? 15_000);
  }

  /** `p2p`, `relay`, `connecting` or `closed`. */
  get path(): PeerPath {
    return this.currentPath;
  }

  /** Whether the signaling behind this connection is post-quantum. */
  get pq(): boolean {
    return this.session.pq;
  }

  /** Candidate types of the selected pair, once the data channel is open. */
  get candidates(): CandidatePair | undefined {
    return this.candidatePair;
  }

  /**
   * Bytes queued on the data channel and not yet sent (0 on the relay path): a sender of
   * many messages waits while this is high, as the channel refuses to queue without bound.
   */
  get bufferedAmount(): number {
    return this.currentPath === 'p2p' ? this.channel.bufferedAmount : 0;
  }

  /** Sends bytes (≤ 16 KiB) over the data channel, or through the relay after a fallback. */
  send(data: Uint8Array): void {
    if (!(data instanceof Uint8Array)) throw new CommuCatError('invalid_argument', 'send takes a Uint8Array');
    if (data.length > MAX_MESSAGE) throw new CommuCatError('too_large', `messages are at most ${MAX_MESSAGE} bytes`);
    if (this.currentPath === 'p2p' && this.channel.readyState === 'open') {
      // RTCDataChannel takes no views of a SharedArrayBuffer: those are copied.
      this.channel.send(data.buffer instanceof ArrayBuffer ? (data as Uint8Array<ArrayBuffer>) : data.slice());
    } else if (this.currentPath === 'relay') {
      this.session.relay(this.peerId, data);
    } else {
      throw new CommuCatError('not_connected', `no path to ${this.peerId} (${this.currentPath})`);
    }
  }

  /** Resolves once a path (P2P or relay) is up. */
  ready(): Promise<PeerPath> {
    if (this.currentPath === 'p2p' || this.currentPath === 'relay') return Promise.resolve(this.currentPath);
    if (this.currentPath === 'closed') return Promise.reject(new CommuCatError('closed', 'peer connection closed'));
    return new Promise((resolve, reject) => {
      const offPath = this.on('path', ({ path }) => {
        offPath();
        if (path === 'closed') reject(new CommuCatError('closed', 'peer connection closed'));
        else resolve(path);
      });
    });
  }

  /** Closes the data channel and the RTCPeerConnection, and tells the peer. */
  close(reason = 'closed'): void {
    this.shutdown(reason, true);
  }

  private shutdown(reason: string, tellPeer: boolean): void {
    if (this.currentPath === 'closed') return;
    clearTimeout(this.timer);
    for (const off of this.unsubscribe) off();
    // Without a session the peer learns from its own side.
    if (tellPeer && this.remoteCid !== undefined && this.session.connected) this.sendSignal({ bye: true });
    this.channel.close();
    this.pc.close();
    this.setPath('closed');
    this.emit('close', { reason });
  }

  private sendSignal(body: Record<string, unknown>): void {
    try {
      const ids = this.remoteCid === undefined ? { cid: this.cid } : { cid: this.cid, peer: this.remoteCid };
      this.session.signal(this.peerId, { [PEER_SIGNAL_TAG]: 1, ...ids, ...body });
    } catch (error) {
      this.emit('error', asError(error));
    }
  }

  private setPath(path: PeerPath): void {
    if (this.currentPath === path) return;
    this.currentPath = path;
    this.emit('path', this.candidatePair ? { path, candidates: this.candidatePair } : { path });
  }

  private enqueue(body: Record<string, unknown>): void {
    // Descriptions must be applied in arrival order; each step awaits the previous one.
    this.queue = this.queue
      .then(() => this.onSignal(body))
      .catch((error: unknown) => this.emit('error', asError(error)));
  }

  private async negotiate(): Promise<void> {
    try {
      this.makingOffer = true;
      const offer = await this.pc.createOffer();
      if (this.pc.signalingState !== 'stable') return;
      await this.pc.setLocalDescription(offer);
      this.sendSignal({ description: this.pc.localDescription?.toJSON() });
    } catch (error) {
      this.emit('error', asError(error));
    } finally {
      this.makingOffer = false;
    }
  }

  private async onSignal(body: Record<string, unknown>): Promise<void> {
    if (this.currentPath === 'closed') return;
    if (body['bye'] === true) {
      if (body['peer'] === this.cid) this.shutdown('the peer closed', false);
      return;
    }
    if (typeof body['cid'] === 'string' && body['description']) this.remoteCid = body['cid'];
    const description = body['description'] as RTCSessionDescriptionInit | undefined;
    if (description && typeof description === 'object') {
      const collision = description.type === 'offer' && (this.makingOffer || this.pc.signalingState !== 'stable');
      this.ignoreOffer = !this.polite && collision;
      if (this.ignoreOffer) return;
      if (collision) await this.pc.setLocalDescription({ type: 'rollback' });
      await this.pc.setRemoteDescription(description);
      if (description.type === 'offer') {
        const answer = await this.pc.createAnswer();
        await this.pc.setLocalDescription(answer);
        this.sendSignal({ description: this.pc.localDescription?.toJSON() });
      }
      return;
    }
    const candidate = body['candidate'] as RTCIceCandidateInit | undefined;
    // Candidates of an earlier connection between the same devices do not apply.
    if (this.remoteCid !== undefined && body['cid'] !== this.remoteCid) return;
    if (candidate && typeof candidate === 'object') {
      try {
        await this.pc.addIceCandidate(candidate);
      } catch (error) {
        // Candidates of an offer we ignored cannot apply; anything else is an error.
        if (!this.ignoreOffer) throw error;
      }
    }
  }

  private onIceState(): void {
    const state = this.pc.iceConnectionState;
    if (state !== 'failed') return;
    if (!this.restarted && typeof this.pc.restartIce === 'function') {
      // One ICE restart (new credentials, new candidates); then the relay path.
      this.restarted = true;
      this.pc.restartIce();
      return;
    }
    this.fallBack('ICE failed');
  }

  private fallBack(reason: string): void {
    if (this.currentPath === 'closed' || this.currentPath === 'relay') return;
    if (!this.relayFallback) {
      this.emit('error', new CommuCatError('timeout', `no P2P path to ${this.peerId}: ${reason}`));
      return;
    }
    this.candidatePair = undefined;
    this.setPath('relay');
  }

  private async onChannelOpen(): Promise<void> {
    clearTimeout(this.timer);
    this.candidatePair = await selectedPair(this.pc).catch(() => undefined);
    if (this.currentPath !== 'closed') this.setPath('p2p');
  }

  private onChannelMessage(data: unknown): void {
    if (data instanceof ArrayBuffer) this.emit('message', new Uint8Array(data));
    else if (ArrayBuffer.isView(data)) this.emit('message', new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
    else if (typeof data === 'string') this.emit('message', new TextEncoder().encode(data));
  }
}

function asError(error: unknown): CommuCatError {
  if (error instanceof CommuCatError) return error;
  return new CommuCatError('protocol', `WebRTC: ${(error as Error)?.message ?? String(error)}`, { cause: error });
}

/** The candidate types of the pair ICE selected, from `getStats()`. */
async function selectedPair(pc: RTCPeerConnection): Promise<CandidatePair | undefined> {
  const stats = await pc.getStats();
  const byId = new Map<string, Record<string, unknown>>();
  stats.forEach((report: Record<string, unknown>) => byId.set(report['id'] as string, report));
  let pair: Record<string, unknown> | undefined;
  for (const report of byId.values()) {
    if (report['type'] === 'transport' && typeof report['selectedCandidatePairId'] === 'string') {
      pair = byId.get(report['selectedCandidatePairId']);
    }
  }
  if (!pair) {
    for (const report of byId.values()) {
      if (report['type'] === 'candidate-pair' && report['state'] === 'succeeded' && (report['nominated'] || report['selected'])) {
        pair = report;
      }
    }
  }
  if (!pair) return undefined;
  const local = byId.get(pair['localCandidateId'] as string)?.['candidateType'];
  const remote = byId.get(pair['remoteCandidateId'] as string)?.['candidateType'];
  return typeof local === 'string' && typeof remote === 'string' ? { local, remote } : undefined;
}

/**
 * Wires an RTCPeerConnection to `peerId` over `session`: ICE servers from assist, offers,
 * answers and trickled candidates as signals, a data channel, one ICE restart on
 * failure, then the daemon's relay. Call it on both sides; the side that answers passes
 * the first signal it received (`isPeerSignal(body)`) as `options.signal`.
 */
export async function connectPeer(session: Session, peerId: string, options: PeerOptions = {}): Promise<PeerConnection> {
  if (!/^[0-9a-f]{64}$/.test(peerId)) throw new CommuCatError('invalid_argument', 'peerId: 64 lowercase hex digits');
  if (peerId === session.deviceId) throw new CommuCatError('invalid_argument', 'peerId is this device');
  const Impl = options.RTCPeerConnection ?? (globalThis as { RTCPeerConnection?: PeerOptions['RTCPeerConnection'] }).RTCPeerConnection;
  if (!Impl) throw new CommuCatError('invalid_argument', 'no global RTCPeerConnection: pass the RTCPeerConnection option');
  // Signals that arrive while assist is fetched are kept, not lost.
  const early: unknown[] = options.signal !== undefined ? [options.signal] : [];
  const stopBuffering = session.on('signal', ({ from, body }) => {
    if (from === peerId && isPeerSignal(body)) early.push(body);
  });
  try {
    let iceServers = options.iceServers ?? session.assist?.ice.ice_servers;
    if (!iceServers) {
      if (!options.assistUrl) {
        throw new CommuCatError('invalid_argument', 'no ICE servers: pass iceServers, assistUrl, or connect with assist: true');
      }
      iceServers = (await getAssist(options.assistUrl)).ice.ice_servers;
    }
    const config: RTCConfiguration = { iceServers };
    if (options.iceTransportPolicy) config.iceTransportPolicy = options.iceTransportPolicy;
    return new PeerConnection(session, peerId, new Impl(config), options, early);
  } finally {
    stopBuffering();
  }
}
