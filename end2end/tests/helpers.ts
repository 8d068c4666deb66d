// What the end-to-end tests share: starting a rill of their own on a free
// port (and knowing it listens by its own log line, not by polling), the
// reference reply of the deterministic demo, and the page helpers.
import { expect, Page } from '@playwright/test';
import { ChildProcess, spawn } from 'node:child_process';
import * as net from 'node:net';
import * as os from 'node:os';
import { RILL_BIN } from '../playwright.config';

/** A port nobody listens on now (the OS picks it). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

/** A rill the test started. */
export interface Rill {
  port: number;
  /** `http://127.0.0.1:<port>` */
  url: string;
  process: ChildProcess;
  /** Sends `signal` and waits for the process to exit. */
  stop(signal?: NodeJS.Signals): Promise<void>;
}

/**
 * Starts the release binary from a directory with no site files (the UI must
 * come from the binary) and resolves once it logs that it listens.
 */
export async function startRill(
  args: string[],
  options: { port?: number; env?: Record<string, string> } = {},
): Promise<Rill> {
  const port = options.port ?? (await freePort());
  const child = spawn(RILL_BIN, ['--addr', `127.0.0.1:${port}`, ...args], {
    cwd: os.tmpdir(),
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, RUST_LOG: 'info', ...options.env },
  });
  let log = '';
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`rill did not start on ${port}:\n${log}`)), 30_000);
    child.stdout!.on('data', (chunk) => {
      log += chunk;
      if (log.includes('listening on')) {
        clearTimeout(timer);
        resolve();
      }
    });
    child.stderr!.on('data', (chunk) => (log += chunk));
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`rill exited (${code}) before listening:\n${log}`));
    });
  });
  return {
    port,
    url: `http://127.0.0.1:${port}`,
    process: child,
    stop(signal: NodeJS.Signals = 'SIGKILL') {
      if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
      const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
      child.kill(signal);
      return exited;
    },
  };
}

/** The reply rill at `baseUrl` gives to `question` (the demo is deterministic). */
export async function referenceReply(baseUrl: string, question: string): Promise<string> {
  const response = await fetch(`${baseUrl}/api/v1/chat`, {
    method: 'POST',
    body: JSON.stringify({ message: question }),
  });
  expect(response.ok).toBeTruthy();
  return (await response.json()).response;
}

/** Waits until the app has hydrated and its WebSocket is live. */
export async function waitLive(page: Page) {
  await expect(page.locator('.badge')).toHaveText('Live · WebSocket');
  await expect(page.locator('.badge')).toHaveAttribute('data-state', 'live');
}

/** Collects the `complete` frames the page's WebSockets receive. */
export function captureCompletes(page: Page): Array<Record<string, any>> {
  const completes: Array<Record<string, any>> = [];
  page.on('websocket', (ws) => {
    ws.on('framereceived', ({ payload }) => {
      try {
        const frame = JSON.parse(String(payload));
        if (frame.type === 'complete') completes.push(frame);
      } catch {
        // not JSON: ignore
      }
    });
  });
  return completes;
}

/** Types a question into the composer and sends it with Enter. */
export async function ask(page: Page, question: string) {
  const input = page.locator('#composer-input');
  await input.fill(question);
  await input.press('Enter');
}
