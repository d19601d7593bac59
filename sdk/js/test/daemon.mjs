// Starts the real `commucat` binary on loopback for the tests, as tests/common/mod.rs
// does: a config file in a temp dir, ephemeral ports, the bound address read from the
// "commucat ready" log line, SIGTERM to stop, and always reaped.
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
export const BIN = process.env.COMMUCAT_BIN ?? resolve(here, '../../../target/debug/commucat');
export const CLI_BIN = process.env.COMMUCAT_CLI_BIN ?? resolve(here, '../../../target/debug/commucat-cli');
const START_TIMEOUT_MS = 30_000;
const STOP_TIMEOUT_MS = 15_000;

const running = new Set();
// A test that fails or throws must not leave daemons behind.
process.on('exit', () => {
  for (const child of running) child.kill('SIGKILL');
});

export function tempDir(name) {
  return mkdtempSync(join(tmpdir(), `commucat-sdkjs-${name}-`));
}

/** A free loopback port (for restarting a daemon on the same address). */
export function freePort() {
  return new Promise((resolvePort, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolvePort(port));
    });
  });
}

export class Daemon {
  /**
   * Starts the daemon with `config` (TOML text) in `dir`; `bind` fixes the HTTP address
   * (default an ephemeral port). Resolves once it logged "commucat ready".
   */
  static async start(config = '', { dir = tempDir('d'), bind = '127.0.0.1:0', env = {} } = {}) {
    const configPath = join(dir, 'commucat.toml');
    writeFileSync(configPath, config);
    const childEnv = { ...process.env };
    for (const key of Object.keys(childEnv)) {
      if (key.startsWith('COMMUCAT_') || key === 'RUST_LOG') delete childEnv[key];
    }
    Object.assign(childEnv, {
      COMMUCAT_SERVER_BIND: bind,
      COMMUCAT_ICE_LITE_BIND: '127.0.0.1:0',
      COMMUCAT_SERVER_STATE_DIR: join(dir, 'state'),
      ...env,
    });
    const child = spawn(BIN, ['--config', configPath], {
      cwd: dir,
      env: childEnv,
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    running.add(child);
    const daemon = new Daemon(child, dir);
    await daemon.ready();
    return daemon;
  }

  constructor(child, dir) {
    this.child = child;
    this.dir = dir;
    this.log = [];
    this.exited = new Promise((resolveExit) => {
      child.once('exit', (code, signal) => {
        running.delete(child);
        resolveExit({ code, signal });
      });
    });
    let buffer = '';
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (chunk) => {
      buffer += chunk;
      let newline;
      while ((newline = buffer.indexOf('\n')) >= 0) {
        this.log.push(buffer.slice(0, newline));
        buffer = buffer.slice(newline + 1);
        this.onLine?.();
      }
    });
  }

  ready() {
    return new Promise((resolveReady, reject) => {
      const timer = setTimeout(() => {
        this.child.kill('SIGKILL');
        reject(new Error(`daemon did not become ready:\n${this.log.join('\n')}`));
      }, START_TIMEOUT_MS);
      const check = () => {
        const line = this.log.find((l) => l.includes('commucat ready'));
        if (!line) return;
        clearTimeout(timer);
        this.onLine = undefined;
        const http = / http=(\S+)/.exec(line)?.[1];
        if (!http) {
          reject(new Error(`no http= in ${line}`));
          return;
        }
        this.http = http;
        this.url = `http://${http}`;
        resolveReady();
      };
      this.onLine = check;
      check();
      this.exited.then(({ code, signal }) => {
        clearTimeout(timer);
        reject(new Error(`daemon exited (${code ?? signal}) before ready:\n${this.log.join('\n')}`));
      });
    });
  }

  /** SIGTERM, then a bounded wait; SIGKILL if it does not exit. */
  async stop() {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return this.exited;
    this.child.kill('SIGTERM');
    let timer;
    const timeout = new Promise((r) => {
      timer = setTimeout(() => r(null), STOP_TIMEOUT_MS);
    });
    const result = await Promise.race([this.exited, timeout]);
    clearTimeout(timer);
    if (result === null) {
      this.child.kill('SIGKILL');
      return this.exited;
    }
    return result;
  }

  /** Stops the daemon and removes its directory. */
  async dispose() {
    await this.stop();
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** Runs the CLI to completion (bounded) and returns its output. */
export function runCli(args, { timeoutMs = 30_000, input } = {}) {
  const result = spawnSync(CLI_BIN, args, { encoding: 'utf8', timeout: timeoutMs, input });
  if (result.error) throw result.error;
  return result;
}
