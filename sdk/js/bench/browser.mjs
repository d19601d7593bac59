// The handshake in headless Chromium against the real daemon on loopback: IK version 2
// hybrid (X25519 + ML-KEM-768, with the ephemeral KEM key) vs IK version 1 classical,
// interleaved in the same page so that both see the same machine state. The page is
// /demo/ (its CSP allows the SDK bundle it serves, /demo/commucat-sdk.min.js, which is
// what runs here). `handshakeMs` runs from sending message 1 to the session keys (client
// crypto in the browser, one round trip, the daemon's side); `connect` is all of
// connect(): server-info fetch and ML-DSA-65 check, upgrade, handshake, welcome, IK ping.
// Prints medians and the ratio; asserts nothing (timings are not tests).
//
//   COMMUCAT_BIN=/path/to/commucat node bench/browser.mjs [rounds, default 60]
import { Daemon } from '../test/daemon.mjs';
import { launchChromium } from '../test/chromium.mjs';

const rounds = Number(process.argv[2] ?? 60);
if (!Number.isInteger(rounds) || rounds < 1 || rounds > 10_000) throw new Error('rounds: 1 to 10000');
const warmup = 10;
const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

const d = await Daemon.start('[limits]\nconnect_rate_per_ip = 100000\nconnect_burst = 100000\n');
const chromium = await launchChromium();
try {
  const page = await chromium.browser.newPage();
  await page.goto(`${d.url}/demo/`);
  const version = await chromium.browser.version();
  const results = await page.evaluate(
    async (rounds, warmup) => {
      const sdk = await import('/demo/commucat-sdk.min.js');
      const modes = {
        'IK v2 hybrid': { pattern: 'IK', version: 2, pq: true },
        'IK v1 classical': { pattern: 'IK', version: 1, pq: false },
      };
      const out = Object.fromEntries(Object.keys(modes).map((m) => [m, { handshake: [], connect: [] }]));
      for (let round = -warmup; round < rounds; round++) {
        for (const [name, options] of Object.entries(modes)) {
          const t0 = performance.now();
          const s = await sdk.connect(location.origin, { keepalive: false, ...options });
          const connectMs = performance.now() - t0;
          if (s.pq !== options.pq || s.version !== options.version) throw new Error(`${name}: got pq=${s.pq} v${s.version}`);
          if (round >= 0) {
            out[name].handshake.push(s.handshakeMs);
            out[name].connect.push(connectMs);
          }
          await s.close();
        }
      }
      return out;
    },
    rounds,
    warmup,
  );
  const pq = results['IK v2 hybrid'];
  const classical = results['IK v1 classical'];
  console.log(`${version} (headless), ${rounds} interleaved rounds after ${warmup} warm-up, medians in ms`);
  console.log(`IK v2 hybrid     handshake ${median(pq.handshake).toFixed(2).padStart(7)}   connect ${median(pq.connect).toFixed(2).padStart(7)}`);
  console.log(`IK v1 classical  handshake ${median(classical.handshake).toFixed(2).padStart(7)}   connect ${median(classical.connect).toFixed(2).padStart(7)}`);
  console.log(
    `ratio hybrid/classical: handshake ${(median(pq.handshake) / median(classical.handshake)).toFixed(2)}, connect ${(median(pq.connect) / median(classical.connect)).toFixed(2)}`,
  );
} finally {
  await chromium.close();
  await d.dispose();
}
