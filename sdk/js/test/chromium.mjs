// Headless Chromium for the browser tests and the browser benchmark: Debian's system
// `chromium` (no browser download), driven by puppeteer-core over the DevTools protocol,
// with a new temporary profile each time; closed, killed if need be, and reaped.
import { existsSync, rmSync } from 'node:fs';
import puppeteer from 'puppeteer-core';
import { tempDir } from './daemon.mjs';

export const CHROMIUM = process.env.CHROMIUM_BIN ?? '/usr/bin/chromium';
const LAUNCH_TIMEOUT_MS = 30_000;
const CLOSE_TIMEOUT_MS = 10_000;

const running = new Set();
process.on('exit', () => {
  for (const proc of running) proc.kill('SIGKILL');
});

/** Launches Chromium; a failure, not a skip, when it is not installed. */
export async function launchChromium() {
  if (!existsSync(CHROMIUM)) {
    throw new Error(`no Chromium at ${CHROMIUM} (apt-get install --no-install-recommends chromium, or set CHROMIUM_BIN)`);
  }
  const profile = tempDir('chromium');
  const browser = await puppeteer.launch({
    executablePath: CHROMIUM,
    headless: true,
    pipe: true,
    timeout: LAUNCH_TIMEOUT_MS,
    protocolTimeout: 60_000,
    userDataDir: profile,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      // WebRTC between two pages of this machine: loopback candidates, real addresses
      // rather than mDNS names.
      '--allow-loopback-in-peer-connection',
      '--disable-features=WebRtcHideLocalIpsWithMdns',
      // Both tabs stay fully active (no timer throttling of the one in the background).
      '--disable-background-timer-throttling',
      '--disable-renderer-backgrounding',
      '--disable-backgrounding-occluded-windows',
    ],
  });
  const proc = browser.process();
  if (proc) running.add(proc);
  return {
    browser,
    async close() {
      let timer;
      await Promise.race([
        browser.close().catch(() => {}),
        new Promise((r) => (timer = setTimeout(r, CLOSE_TIMEOUT_MS))),
      ]);
      clearTimeout(timer);
      if (proc && proc.exitCode === null && proc.signalCode === null) {
        proc.kill('SIGKILL');
        await new Promise((r) => proc.once('exit', r));
      }
      if (proc) running.delete(proc);
      rmSync(profile, { recursive: true, force: true });
    },
  };
}
