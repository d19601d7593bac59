// A real coturn `turnserver` on loopback for the TURN test, as tests/common/coturn.rs
// starts it: no configuration file, TURN REST secret, a small relay port range, its own
// temporary directory; ready once it answers a STUN Binding; killed and reaped.
import { spawn } from 'node:child_process';
import { createSocket } from 'node:dgram';
import { existsSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { freePort, tempDir } from './daemon.mjs';

const READY_TIMEOUT_MS = 15_000;
const running = new Set();
process.on('exit', () => {
  for (const child of running) child.kill('SIGKILL');
});

export function turnserverPath() {
  const found = [...(process.env.PATH ?? '').split(':'), '/usr/bin', '/usr/local/bin']
    .map((dir) => join(dir, 'turnserver'))
    .find((p) => existsSync(p));
  if (!found) {
    // A failure, not a skip: the test needs a real TURN server (apt-get install coturn).
    throw new Error("coturn's turnserver is not installed (apt-get install coturn)");
  }
  return found;
}

export class Coturn {
  static async start(secret) {
    const dir = tempDir('coturn');
    const port = await freePort();
    const minPort = 40_000 + Math.floor(Math.random() * 20_000);
    const child = spawn(
      turnserverPath(),
      [
        '-n',
        '--listening-ip', '127.0.0.1', '--relay-ip', '127.0.0.1',
        '--listening-port', String(port),
        '--min-port', String(minPort), '--max-port', String(minPort + 15),
        '--realm', 'commucat.test',
        '--no-tls', '--no-dtls', '--no-cli', '--no-rfc5780',
        '--allow-loopback-peers', '--fingerprint',
        '--use-auth-secret', `--static-auth-secret=${secret}`,
        '--log-file', join(dir, 'turn.log'), '--simple-log', '--no-stdout-log',
        '--pidfile', join(dir, 'turn.pid'), '--userdb', join(dir, 'turndb'),
      ],
      { stdio: 'ignore' },
    );
    running.add(child);
    const coturn = new Coturn(child, port, dir);
    try {
      await coturn.ready();
    } catch (error) {
      coturn.stop();
      throw error;
    }
    return coturn;
  }

  constructor(child, port, dir) {
    this.child = child;
    this.port = port;
    this.dir = dir;
    this.exited = new Promise((resolve) => child.once('exit', () => {
      running.delete(child);
      resolve();
    }));
  }

  /** STUN Binding requests every 100 ms until one is answered (bounded). */
  ready() {
    return new Promise((resolve, reject) => {
      const socket = createSocket('udp4');
      const request = Buffer.from([0, 1, 0, 0, 0x21, 0x12, 0xa4, 0x42, ...Array(12).fill(0x5a)]);
      let finished = false;
      const done = (error) => {
        if (finished) return;
        finished = true;
        clearInterval(timer);
        clearTimeout(deadline);
        socket.close();
        if (error) reject(error);
        else resolve();
      };
      socket.on('message', (reply) => {
        if (reply.length >= 20 && reply[0] === 1 && reply[1] === 1) done();
      });
      socket.on('error', () => {});
      const timer = setInterval(() => socket.send(request, this.port, '127.0.0.1'), 100);
      const deadline = setTimeout(() => done(new Error(`turnserver did not answer on ${this.port}`)), READY_TIMEOUT_MS);
      this.exited.then(() => done(new Error('turnserver exited before answering')));
    });
  }

  async stop() {
    this.child.kill('SIGTERM');
    let timer;
    await Promise.race([this.exited, new Promise((r) => (timer = setTimeout(r, 5_000)))]);
    clearTimeout(timer);
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGKILL');
    rmSync(this.dir, { recursive: true, force: true });
  }
}
