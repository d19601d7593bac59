// The CommuCat demo page: a session with the daemon that served it (hybrid post-quantum
// handshake), then `connectPeer` to another tab's device id: chat and files over a
// WebRTC data channel, or over the daemon's relay when WebRTC cannot connect.
//
// Query options (for tests and experiments; anything else is refused, not ignored):
//   policy=all|relay          iceTransportPolicy (relay: TURN only, needs [[ice.turn]])
//   fail_ice=1                drop every remote candidate, so ICE cannot connect and the
//                             daemon relay fallback carries the messages
//   connect_timeout_ms=N      how long ICE may try before the fallback (500…60000, 15000)
//   pattern=XK|IK             the handshake pattern (default XK)
//
// An access token, for a daemon with `[auth] required`, goes in the fragment
// (`/demo/#access_token=…`, percent-encoded; the page request never carries a fragment,
// and the page removes it from its address at once) or in the page's token field.
import { connect, connectPeer, isPeerSignal } from './commucat-sdk.min.js';

const MAX_FILE = 8 * 1024 * 1024;
const CHUNK = 16_383; // one type byte + data = the SDK's 16 KiB message limit
const HIGH_WATER = 1024 * 1024;
const KIND = { text: 1, fileStart: 2, fileChunk: 3, fileEnd: 4 };

const $ = (id) => document.getElementById(id);
const encoder = new TextEncoder();
const decoder = new TextDecoder('utf-8', { fatal: true });

function readOptions(search) {
  const params = new URLSearchParams(search);
  const known = new Set(['policy', 'fail_ice', 'connect_timeout_ms', 'pattern']);
  for (const key of params.keys()) {
    if (key === 'access_token') throw new Error('the access token goes in the fragment (#access_token=…): a query is sent with the page request');
    if (!known.has(key)) throw new Error(`unknown option ${key}`);
  }
  const policy = params.get('policy') ?? 'all';
  if (policy !== 'all' && policy !== 'relay') throw new Error('policy: all or relay');
  const failIce = params.get('fail_ice') ?? '0';
  if (failIce !== '0' && failIce !== '1') throw new Error('fail_ice: 0 or 1');
  const timeout = params.get('connect_timeout_ms') ?? '15000';
  if (!/^[0-9]{3,5}$/.test(timeout) || +timeout < 500 || +timeout > 60_000) {
    throw new Error('connect_timeout_ms: 500 to 60000');
  }
  const pattern = params.get('pattern') ?? 'XK';
  if (pattern !== 'XK' && pattern !== 'IK') throw new Error('pattern: XK or IK');
  return { policy, failIce: failIce === '1', connectTimeoutMs: +timeout, pattern };
}

/**
 * The access token of the fragment `#access_token=<encodeURIComponent(token)>`, if any
 * (percent-decoded only: a `+` stays a `+`). The fragment is then removed from the
 * address bar and the history entry, so the token is not shown or copied with the URL.
 */
function takeToken() {
  const prefix = '#access_token=';
  const { hash } = location;
  if (!hash.startsWith(prefix)) return undefined;
  history.replaceState(null, '', location.pathname + location.search);
  const token = decodeURIComponent(hash.slice(prefix.length));
  return token === '' ? undefined : token;
}

/** An RTCPeerConnection that hears no candidate of the other side: ICE cannot connect. */
function deafPeerConnection() {
  return class Deaf extends RTCPeerConnection {
    addIceCandidate() {
      return Promise.resolve();
    }
    setRemoteDescription(description) {
      const sdp = description?.sdp?.split('\r\n').filter((l) => !l.startsWith('a=candidate')).join('\r\n');
      return super.setRemoteDescription(sdp === undefined ? description : { type: description.type, sdp });
    }
  };
}

function hex(bytes) {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

async function sha256(data) {
  return hex(new Uint8Array(await crypto.subtle.digest('SHA-256', data)));
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function formatSize(n) {
  return n < 1024 ? `${n} B` : n < 1024 * 1024 ? `${(n / 1024).toFixed(1)} KiB` : `${(n / 1024 / 1024).toFixed(2)} MiB`;
}

/** A line in the chat log; `data-*` attributes carry what tests read. */
function log(kind, from, text, data = {}) {
  const li = document.createElement('li');
  li.dataset.kind = kind;
  li.dataset.from = from;
  for (const [key, value] of Object.entries(data)) li.dataset[key] = String(value);
  li.textContent = text;
  $('log').append(li);
  li.scrollIntoView({ block: 'nearest' });
  return li;
}

function setStatus(state, text) {
  $('status').dataset.state = state;
  $('status').textContent = text;
}

function frame(kind, payload) {
  const out = new Uint8Array(1 + payload.length);
  out[0] = kind;
  out.set(payload, 1);
  return out;
}

class Demo {
  constructor(options) {
    this.options = options;
    this.session = undefined;
    this.peer = undefined;
    this.opening = false;
    this.incoming = undefined;
    this.sending = Promise.resolve();
  }

  /** Opens the session; `accessToken` for a daemon with `[auth] required`. */
  async start(accessToken) {
    const { pattern, policy, failIce, connectTimeoutMs } = this.options;
    $('options').textContent = `pattern ${pattern}, ICE policy ${policy}${failIce ? ', ICE made to fail' : ''}, fallback after ${connectTimeoutMs} ms`;
    const session = await connect(location.origin, {
      pattern,
      assist: true,
      reconnect: true,
      ...(accessToken === undefined ? {} : { accessToken }),
    });
    this.session = session;
    $('device-id').textContent = session.deviceId;
    $('copy').disabled = false;
    $('peer-connect').disabled = false;
    this.showSession();
    setStatus('connected', `connected (handshake ${session.handshakeMs.toFixed(1)} ms)`);
    session.on('reconnect', () => {
      this.showSession();
      setStatus('connected', 'reconnected');
    });
    session.on('close', ({ willReconnect, reason }) => {
      setStatus(willReconnect ? 'connecting' : 'closed', willReconnect ? 'reconnecting…' : `closed: ${reason}`);
    });
    session.on('error', (e) => log('system', 'me', `session: ${e.code}: ${e.message}`));
    session.on('signal', ({ from, body }) => {
      if (!isPeerSignal(body) || this.peer || this.opening) return;
      $('peer-id').value = from;
      log('system', 'peer', `incoming connection from ${from.slice(0, 16)}…`);
      void this.openPeer(from, body);
    });
  }

  showSession() {
    const s = this.session;
    $('pq').dataset.pq = String(s.pq);
    $('pq').textContent = s.pq
      ? `post-quantum: hybrid X25519 + ML-KEM-768, Noise ${s.pattern} version ${s.version}`
      : `classical: X25519 only, Noise ${s.pattern} version ${s.version} (the server offers no KEM)`;
  }

  async openPeer(peerId, firstSignal) {
    if (this.peer) this.peer.close();
    const { policy, failIce, connectTimeoutMs } = this.options;
    const options = { connectTimeoutMs };
    if (policy === 'relay') options.iceTransportPolicy = 'relay';
    if (failIce) options.RTCPeerConnection = deafPeerConnection();
    if (firstSignal !== undefined) options.signal = firstSignal;
    this.showPath('connecting');
    $('peer-close').disabled = false;
    let peer;
    this.opening = true;
    try {
      peer = await connectPeer(this.session, peerId, options);
    } catch (error) {
      this.opening = false;
      this.showPath('none');
      log('system', 'me', `cannot connect: ${error.message}`);
      return;
    }
    this.opening = false;
    this.peer = peer;
    this.incoming = undefined;
    peer.on('path', ({ path, candidates }) => this.showPath(path, candidates));
    peer.on('message', (bytes) => this.onMessage(bytes));
    peer.on('error', (e) => log('system', 'me', `peer: ${e.code}: ${e.message}`));
    peer.on('close', ({ reason }) => {
      if (this.peer !== peer) return;
      this.peer = undefined;
      this.showPath('closed');
      this.enableChat(false);
      $('peer-close').disabled = true;
      log('system', 'peer', `connection closed: ${reason}`);
    });
    if (peer.path !== 'connecting') this.showPath(peer.path, peer.candidates);
  }

  showPath(path, candidates) {
    const el = $('path');
    el.dataset.path = path;
    delete el.dataset.local;
    delete el.dataset.remote;
    if (path === 'p2p') {
      const local = candidates?.local ?? 'unknown';
      const remote = candidates?.remote ?? 'unknown';
      el.dataset.local = local;
      el.dataset.remote = remote;
      el.textContent = `WebRTC data channel, candidate pair ${local} ↔ ${remote}${local === 'relay' || remote === 'relay' ? ' (through TURN)' : ''}`;
      this.enableChat(true);
    } else if (path === 'relay') {
      el.textContent = 'daemon relay fallback (WebRTC could not connect; the bytes go through the daemon)';
      this.enableChat(true);
    } else if (path === 'connecting') {
      el.textContent = 'connecting…';
    } else {
      el.textContent = path === 'closed' ? 'closed' : 'not connected';
    }
  }

  enableChat(on) {
    for (const id of ['message', 'send', 'file']) $(id).disabled = !on;
  }

  /** Sends one framed message; on the relay path at 80 % of the daemon's relay rate. */
  async sendFramed(bytes) {
    const peer = this.peer;
    if (!peer) throw new Error('not connected');
    if (peer.path === 'relay') {
      const rate = this.session.serverInfo.limits?.relay_bytes_per_second ?? 262_144;
      await sleep((bytes.length * 1000) / (rate * 0.8));
    }
    while (peer.path === 'p2p' && peer.bufferedAmount > HIGH_WATER) await sleep(5);
    peer.send(bytes);
  }

  /**
   * Sends are serialized, so a file's chunks never interleave with another message; a
   * failure is shown in the log (the returned promise never rejects).
   */
  enqueue(task) {
    this.sending = this.sending.then(task).catch((error) => log('system', 'me', `send failed: ${error.message}`));
    return this.sending;
  }

  sendText(text) {
    const bytes = encoder.encode(text);
    if (bytes.length === 0) return;
    if (bytes.length > CHUNK) throw new Error('message too long');
    return this.enqueue(async () => {
      await this.sendFramed(frame(KIND.text, bytes));
      log('text', 'me', text);
    });
  }

  sendFile(file) {
    return this.enqueue(async () => {
      if (file.size > MAX_FILE) throw new Error(`${file.name} is larger than ${formatSize(MAX_FILE)}`);
      const data = new Uint8Array(await file.arrayBuffer());
      const digest = await sha256(data);
      const name = file.name.slice(0, 200);
      const entry = log('file', 'me', `sending ${name} (${formatSize(data.length)})…`, { name, size: data.length, sha256: digest });
      await this.sendFramed(frame(KIND.fileStart, encoder.encode(JSON.stringify({ name, size: data.length }))));
      for (let i = 0; i < data.length; i += CHUNK) {
        await this.sendFramed(frame(KIND.fileChunk, data.subarray(i, i + CHUNK)));
      }
      await this.sendFramed(frame(KIND.fileEnd, encoder.encode(JSON.stringify({ sha256: digest }))));
      entry.textContent = `sent ${name} (${formatSize(data.length)}), SHA-256 ${digest}`;
      entry.dataset.sent = 'true';
    });
  }

  onMessage(bytes) {
    try {
      this.receive(bytes);
    } catch (error) {
      this.incoming = undefined;
      log('system', 'peer', `bad message from the peer: ${error.message}`);
    }
  }

  /** Every message from the peer is checked: kind, UTF-8, JSON shape, sizes, order. */
  receive(bytes) {
    if (bytes.length === 0) throw new Error('empty');
    const kind = bytes[0];
    const payload = bytes.subarray(1);
    if (kind === KIND.text) {
      log('text', 'peer', decoder.decode(payload));
    } else if (kind === KIND.fileStart) {
      const meta = JSON.parse(decoder.decode(payload));
      if (typeof meta?.name !== 'string' || meta.name.length === 0 || meta.name.length > 200) throw new Error('file name');
      if (!Number.isSafeInteger(meta.size) || meta.size < 0 || meta.size > MAX_FILE) throw new Error('file size');
      const entry = log('file', 'peer', `receiving ${meta.name} (${formatSize(meta.size)})…`, { name: meta.name, size: meta.size });
      this.incoming = { name: meta.name, size: meta.size, data: new Uint8Array(meta.size), received: 0, entry };
    } else if (kind === KIND.fileChunk) {
      const file = this.incoming;
      if (!file) throw new Error('file data without a file');
      if (file.received + payload.length > file.size) throw new Error('more file data than announced');
      file.data.set(payload, file.received);
      file.received += payload.length;
    } else if (kind === KIND.fileEnd) {
      const file = this.incoming;
      if (!file) throw new Error('file end without a file');
      this.incoming = undefined;
      const { sha256: stated } = JSON.parse(decoder.decode(payload));
      if (typeof stated !== 'string' || !/^[0-9a-f]{64}$/.test(stated)) throw new Error('file digest');
      void this.finishFile(file, stated);
    } else {
      throw new Error(`unknown kind ${kind}`);
    }
  }

  async finishFile(file, stated) {
    const { entry } = file;
    const digest = await sha256(file.data);
    const verified = file.received === file.size && digest === stated;
    entry.dataset.sha256 = digest;
    entry.dataset.received = String(file.received);
    entry.dataset.verified = String(verified);
    entry.textContent = verified
      ? `received ${file.name} (${formatSize(file.size)}), SHA-256 ${digest} verified `
      : `received ${file.name} damaged: ${file.received} of ${file.size} bytes, SHA-256 ${digest} (sender: ${stated})`;
    if (verified) {
      const link = document.createElement('a');
      link.href = URL.createObjectURL(new Blob([file.data]));
      link.download = file.name;
      link.textContent = 'save';
      entry.append(link);
    }
  }
}

function wire(demo) {
  $('copy').addEventListener('click', () => {
    const id = $('device-id').textContent;
    navigator.clipboard?.writeText(id).then(
      () => ($('copy').textContent = 'Copied'),
      () => ($('copy').textContent = 'Select and copy'),
    );
  });
  $('peer-form').addEventListener('submit', (event) => {
    event.preventDefault();
    const id = $('peer-id').value.trim().toLowerCase();
    if (!/^[0-9a-f]{64}$/.test(id)) {
      log('system', 'me', 'a device id is 64 hex digits');
      return;
    }
    if (id === demo.session?.deviceId) {
      log('system', 'me', 'that is this tab: open the page in a second tab and use its id');
      return;
    }
    void demo.openPeer(id);
  });
  $('token-form').addEventListener('submit', (event) => {
    event.preventDefault();
    const token = $('access-token').value.trim();
    if (token === '') {
      log('system', 'me', 'enter the access token the daemon was configured with');
      return;
    }
    void open(demo, token);
  });
  $('peer-close').addEventListener('click', () => demo.peer?.close('hung up'));
  $('chat-form').addEventListener('submit', (event) => {
    event.preventDefault();
    const text = $('message').value;
    $('message').value = '';
    try {
      void demo.sendText(text);
    } catch (error) {
      log('system', 'me', error.message);
    }
  });
  $('file').addEventListener('change', () => {
    const file = $('file').files?.[0];
    $('file').value = '';
    if (file) void demo.sendFile(file);
  });
}

async function main() {
  let options;
  try {
    options = readOptions(location.search);
  } catch (error) {
    setStatus('error', `bad page option: ${error.message}`);
    return;
  }
  let token;
  try {
    token = takeToken();
  } catch {
    setStatus('error', 'bad access token in the fragment: percent-encode it (encodeURIComponent)');
    return;
  }
  const demo = new Demo(options);
  wire(demo);
  await open(demo, token);
}

/** Starts the session; on failure the token field is offered (a browser does not show
 * a page why a WebSocket upgrade was refused, so a 401 looks like any other failure). */
async function open(demo, accessToken) {
  $('token-connect').disabled = true;
  setStatus('connecting', 'connecting…');
  try {
    await demo.start(accessToken);
  } catch (error) {
    const hint = accessToken === undefined ? ' (if this daemon requires an access token, enter it above)' : '';
    setStatus('error', `cannot connect: ${error.code ?? 'error'}: ${error.message}${hint}`);
    $('token-connect').disabled = false;
  }
}

void main();
