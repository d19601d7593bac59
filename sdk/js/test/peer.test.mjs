// connectPeer between two JS sessions through the real daemon, with the WebRTC stack of
// @roamhq/wrtc (libwebrtc for Node): a data channel over loopback, and, with ICE made to
// fail, the fallback to the daemon's relay behind the same send/receive API.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import wrtc from '@roamhq/wrtc';
import { Daemon } from './daemon.mjs';
import { Coturn } from './coturn.mjs';
import { WebSocket, nextEvent } from './helpers.mjs';
import { connect, connectPeer, isPeerSignal } from '../dist/index.js';

/** A PeerConnection that hears no candidate of the other side: ICE cannot connect. */
class Deaf extends wrtc.RTCPeerConnection {
  addIceCandidate() {
    return Promise.resolve();
  }
  setRemoteDescription(description) {
    const sdp = description.sdp?.split('\r\n').filter((l) => !l.startsWith('a=candidate')).join('\r\n');
    return super.setRemoteDescription({ type: description.type, sdp });
  }
}

/** `b` answers the first peer signal from `a` with its own connectPeer. */
function answerer(b, aId, options) {
  return new Promise((resolve, reject) => {
    const off = b.on('signal', ({ from, body }) => {
      if (from !== aId || !isPeerSignal(body)) return;
      off();
      connectPeer(b, aId, { ...options, signal: body }).then(resolve, reject);
    });
  });
}

function collect(peer, total) {
  return new Promise((resolve, reject) => {
    const parts = [];
    let size = 0;
    const timer = setTimeout(() => reject(new Error(`received ${size} of ${total} bytes`)), 20_000);
    peer.on('message', (data) => {
      parts.push(data);
      size += data.length;
      if (size >= total) {
        clearTimeout(timer);
        resolve(Buffer.concat(parts));
      }
    });
  });
}

describe('connectPeer', () => {
  let d;
  let a;
  let b;
  before(async () => {
    d = await Daemon.start('');
    a = await connect(d.url, { WebSocket, assist: true, keepalive: false });
    b = await connect(d.url, { WebSocket, assist: true, keepalive: false });
  });
  after(async () => {
    await a?.close();
    await b?.close();
    await d?.dispose();
  });

  test('a data channel carries 1 MiB, signaled over the PQ session', async () => {
    const options = { RTCPeerConnection: wrtc.RTCPeerConnection };
    const pending = answerer(b, a.deviceId, options);
    const pa = await connectPeer(a, b.deviceId, options);
    const pb = await pending;
    try {
      assert.equal(await pa.ready(), 'p2p');
      assert.equal(await pb.ready(), 'p2p');
      assert.equal(pa.pq, true);
      assert.ok(['host', 'prflx', 'srflx'].includes(pa.candidates?.local), JSON.stringify(pa.candidates));
      const file = new Uint8Array(1 << 20).map((_, i) => (i * 31) & 0xff);
      const received = collect(pb, file.length);
      for (let i = 0; i < file.length; i += 16_384) pa.send(file.subarray(i, i + 16_384));
      assert.ok(Buffer.from(file).equals(await received));
      const back = nextEvent(pa, 'message');
      pb.send(new TextEncoder().encode('ack'));
      assert.equal(new TextDecoder().decode(await back), 'ack');
      const closed = nextEvent(pb, 'close');
      pa.close();
      assert.equal((await closed).reason, 'the peer closed');
      assert.equal(pb.path, 'closed');
    } finally {
      pa.close();
      pb.close();
    }
  });

  test('both sides may start at once (perfect negotiation)', async () => {
    const options = { RTCPeerConnection: wrtc.RTCPeerConnection };
    const [pa, pb] = await Promise.all([connectPeer(a, b.deviceId, options), connectPeer(b, a.deviceId, options)]);
    try {
      assert.equal(await pa.ready(), 'p2p');
      assert.equal(await pb.ready(), 'p2p');
      const got = nextEvent(pb, 'message');
      pa.send(new TextEncoder().encode('glare resolved'));
      assert.equal(new TextDecoder().decode(await got), 'glare resolved');
    } finally {
      pa.close();
      pb.close();
    }
  });

  test('when ICE cannot connect, the relay path delivers', async () => {
    const options = { RTCPeerConnection: Deaf, connectTimeoutMs: 2_000 };
    const pending = answerer(b, a.deviceId, options);
    const pa = await connectPeer(a, b.deviceId, options);
    const pb = await pending;
    try {
      assert.equal(await pa.ready(), 'relay');
      assert.equal(await pb.ready(), 'relay');
      const received = collect(pb, 3 * 16_384);
      const chunk = new Uint8Array(16_384).fill(7);
      for (let i = 0; i < 3; i++) pa.send(chunk);
      assert.equal((await received).length, 3 * 16_384);
      const back = nextEvent(pa, 'message');
      pb.send(new TextEncoder().encode('via relay'));
      assert.equal(new TextDecoder().decode(await back), 'via relay');
    } finally {
      pa.close();
      pb.close();
    }
  });
});

describe('connectPeer through TURN', () => {
  let coturn;
  let d;
  let a;
  let b;
  before(async () => {
    const secret = 'sdk-turn-secret';
    coturn = await Coturn.start(secret);
    d = await Daemon.start(`[[ice.turn]]\nurls = ["turn:127.0.0.1:${coturn.port}?transport=udp"]\nsecret = "${secret}"\n`);
    a = await connect(d.url, { WebSocket, assist: true, keepalive: false });
    b = await connect(d.url, { WebSocket, assist: true, keepalive: false });
  });
  after(async () => {
    await a?.close();
    await b?.close();
    await d?.dispose();
    await coturn?.stop();
  });

  test("iceTransportPolicy 'relay' connects through coturn with assist's credentials", async () => {
    const turn = a.assist.ice.ice_servers.find((s) => s.urls.some((u) => u.startsWith('turn:')));
    assert.ok(turn?.username && turn.credential, JSON.stringify(a.assist.ice.ice_servers));
    const options = { RTCPeerConnection: wrtc.RTCPeerConnection, iceTransportPolicy: 'relay', connectTimeoutMs: 10_000 };
    const pending = answerer(b, a.deviceId, options);
    const pa = await connectPeer(a, b.deviceId, options);
    const pb = await pending;
    try {
      assert.equal(await pa.ready(), 'p2p');
      assert.equal(await pb.ready(), 'p2p');
      assert.equal(pa.candidates?.local, 'relay', JSON.stringify(pa.candidates));
      const file = new Uint8Array(256 * 1024).map((_, i) => (i * 13) & 0xff);
      const received = collect(pb, file.length);
      for (let i = 0; i < file.length; i += 16_384) pa.send(file.subarray(i, i + 16_384));
      assert.ok(Buffer.from(file).equals(await received));
    } finally {
      pa.close();
      pb.close();
    }
  });
});
