// Handshake cost in Node against the real daemon on loopback: IK version 2 hybrid vs
// IK version 1 classical (and XK for reference), interleaved so that both see the same
// machine state. `handshakeMs` runs from sending message 1 to the session keys (client
// crypto, one round trip and the daemon's side); `connectMs` is all of connect():
// server-info fetch and ML-DSA check, WebSocket upgrade, handshake, welcome (and the IK
// confirmation ping).
//
//   COMMUCAT_BIN=/path/to/commucat node bench/handshake.mjs [rounds]
import WebSocket from 'ws';
import { Daemon } from '../test/daemon.mjs';
import { connect } from '../dist/index.js';

const rounds = Number(process.argv[2] ?? 100);
const modes = [
  ['IK v2 hybrid', { pattern: 'IK', version: 2, pq: true }],
  ['IK v1 classical', { pattern: 'IK', version: 1, pq: false }],
  ['XK v2 hybrid', { pattern: 'XK', version: 2, pq: true }],
  ['XK v1 classical', { pattern: 'XK', version: 1, pq: false }],
];
const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
};
const mean = (xs) => xs.reduce((a, b) => a + b, 0) / xs.length;

const d = await Daemon.start('[limits]\nconnect_rate_per_ip = 100000\nconnect_burst = 100000\n');
try {
  const results = new Map(modes.map(([name]) => [name, { handshake: [], connect: [] }]));
  for (let round = -10; round < rounds; round++) {
    for (const [name, options] of modes) {
      const t0 = performance.now();
      const s = await connect(d.url, { WebSocket, keepalive: false, ...options });
      const connectMs = performance.now() - t0;
      if (round >= 0) {
        results.get(name).handshake.push(s.handshakeMs);
        results.get(name).connect.push(connectMs);
      }
      await s.close();
    }
  }
  console.log(`node ${process.version}, ${rounds} rounds (after 10 warm-up), ms`);
  console.log('mode              handshake median/mean   connect median/mean');
  for (const [name, r] of results) {
    console.log(
      `${name.padEnd(17)} ${median(r.handshake).toFixed(2).padStart(7)} / ${mean(r.handshake).toFixed(2).padEnd(10)} ${median(r.connect).toFixed(2).padStart(7)} / ${mean(r.connect).toFixed(2)}`,
    );
  }
} finally {
  await d.dispose();
}
