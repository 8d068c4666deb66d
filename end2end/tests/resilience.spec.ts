// The UI keeps a reply word-perfect across dropped WebSockets, falls back to SSE
// and to long-polling when those are refused, and says what happened when the
// server restarts mid-reply.
import { test, expect, Page, WebSocketRoute } from '@playwright/test';
import { ChildProcess, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { RILL_BIN } from '../playwright.config';
import { ask, waitLive } from './helpers';

/** The reply the server gives to `question` (the demo is deterministic). */
async function referenceReply(page: Page, question: string): Promise<string> {
  const response = await page.request.post('/api/v1/chat', { data: { message: question } });
  expect(response.ok()).toBeTruthy();
  return (await response.json()).response;
}

test('a reply survives the WebSocket being killed three times, word-perfect', async ({ page }) => {
  let kills = 0;
  const completes: string[] = [];
  await page.routeWebSocket('**/ws/chat', (ws: WebSocketRoute) => {
    const server = ws.connectToServer();
    let tokens = 0;
    ws.onMessage((message) => server.send(message));
    server.onMessage((message) => {
      const frame = JSON.parse(String(message));
      if (frame.type === 'complete') completes.push(frame.response);
      ws.send(message);
      if (frame.type === 'token' && ++tokens === 12 && kills < 3) {
        kills++;
        ws.close({ code: 4000, reason: 'dropped by the test' });
        server.close();
      }
    });
  });
  await page.goto('/');
  await waitLive(page);
  const question = 'Survive three dropped connections';
  await ask(page, question);
  const reply = page.locator('article.msg.assistant').last();
  await expect(reply).toHaveAttribute('data-status', 'complete', { timeout: 40_000 });
  expect(kills).toBe(3);
  expect(completes.length).toBe(1);
  await expect(reply).toHaveAttribute('data-raw', completes[0]);
  expect(completes[0]).toBe(await referenceReply(page, question));
  await expect(page.locator('.badge')).toHaveText('Live · WebSocket');
});

test('with WebSocket refused the UI falls back to SSE, completes, and moves back up', async ({ page }) => {
  let refuse = true;
  await page.routeWebSocket('**/ws/chat', (ws: WebSocketRoute) => {
    if (refuse) {
      ws.close({ code: 4003, reason: 'refused by the test' });
      return;
    }
    ws.connectToServer();
  });
  await page.goto('/');
  await expect(page.locator('.badge')).toHaveText('Fallback · SSE', { timeout: 30_000 });
  const question = 'Answer me over server-sent events';
  await ask(page, question);
  const reply = page.locator('article.msg.assistant').last();
  await expect(reply).toHaveAttribute('data-status', 'complete', { timeout: 30_000 });
  await expect(reply).toHaveAttribute('data-raw', await referenceReply(page, question));
  // The UI keeps probing: once WebSocket works again it moves back to it.
  refuse = false;
  await expect(page.locator('.badge')).toHaveText('Live · WebSocket', { timeout: 30_000 });
});

test('with WebSocket and SSE refused the UI completes over HTTP long-polling', async ({ page }) => {
  await page.routeWebSocket('**/ws/chat', (ws: WebSocketRoute) => {
    ws.close({ code: 4003, reason: 'refused by the test' });
  });
  // A proxy that refuses event streams.
  await page.route('**/api/v1/streams/*/events**', (route) =>
    route.fulfill({ status: 502, contentType: 'text/plain', body: 'bad gateway' }),
  );
  await page.goto('/');
  await expect(page.locator('.badge')).toHaveText('Fallback · SSE', { timeout: 30_000 });
  const question = 'Answer me by polling';
  await ask(page, question);
  await expect(page.locator('.badge')).toHaveText('Fallback · HTTP polling', { timeout: 30_000 });
  const reply = page.locator('article.msg.assistant').last();
  await expect(reply).toHaveAttribute('data-status', 'complete', { timeout: 30_000 });
  await expect(reply).toHaveAttribute('data-raw', await referenceReply(page, question));
  // Stop works over HTTP too.
  await ask(page, 'A second, longer question to stop');
  const second = page.locator('article.msg.assistant').last();
  await expect(second).toHaveAttribute('data-status', 'streaming', { timeout: 30_000 });
  await second.locator('button.stop').click();
  await expect(second).toHaveAttribute('data-status', 'stopped', { timeout: 30_000 });
});

test('pulling the network cable mid-reply: the reply completes word-perfect once it is back', async ({ page, context }) => {
  await page.goto('/');
  await waitLive(page);
  const question = 'Keep going while I am offline';
  const expected = await referenceReply(page, question);
  await ask(page, question);
  const reply = page.locator('article.msg.assistant').last();
  await expect(reply).toHaveAttribute('data-status', 'streaming');
  await expect(reply.locator('.markdown')).toContainText('You asked');
  await context.setOffline(true);
  // The browser's offline event drops the connection at once.
  await expect(page.locator('.badge')).not.toHaveText('Live · WebSocket', { timeout: 5_000 });
  await page.waitForTimeout(1500);
  await context.setOffline(false);
  await expect(reply).toHaveAttribute('data-status', 'complete', { timeout: 60_000 });
  await expect(reply).toHaveAttribute('data-raw', expected);
});

/** A rill of our own, so the test can restart it. */
function startRill(port: number, dataDir: string): ChildProcess {
  return spawn(
    RILL_BIN,
    ['--addr', `127.0.0.1:${port}`, '--data-dir', dataDir, '--demo-delay-ms', '40', '--demo-tokens', '400', '--shutdown-grace', '1'],
    { cwd: os.tmpdir(), stdio: 'ignore' },
  );
}

async function waitHealthy(port: number) {
  for (let i = 0; i < 200; i++) {
    try {
      const response = await fetch(`http://127.0.0.1:${port}/health`);
      if (response.ok) return;
    } catch {
      // not up yet
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error(`rill did not start on ${port}`);
}

test('a server restart mid-reply: the UI reconnects and marks the reply interrupted', async ({ page }) => {
  const port = 3108;
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'rill-restart-'));
  let rill = startRill(port, dataDir);
  try {
    await waitHealthy(port);
    await page.goto(`http://127.0.0.1:${port}/`);
    await waitLive(page);
    await ask(page, 'A long answer, please');
    const reply = page.locator('article.msg.assistant').last();
    await expect(reply).toHaveAttribute('data-status', 'streaming');
    await expect(reply.locator('.markdown')).toContainText('You asked');
    const exited = new Promise((resolve) => rill.once('exit', resolve));
    rill.kill('SIGTERM');
    await exited;
    rill = startRill(port, dataDir);
    await waitHealthy(port);
    await expect(reply).toHaveAttribute('data-status', 'interrupted', { timeout: 40_000 });
    await expect(reply.locator('.note.interrupted')).toContainText('server restarted');
    // The text that arrived is kept, not thrown away.
    expect((await reply.getAttribute('data-raw'))!).toContain('You asked');
    await expect(page.locator('.badge')).toHaveText('Live · WebSocket', { timeout: 40_000 });
    // And the chat works on the new server.
    await ask(page, 'Are you back?');
    await expect(page.locator('article.msg.assistant').last()).toHaveAttribute('data-status', 'complete', {
      timeout: 40_000,
    });
  } finally {
    rill.kill('SIGKILL');
  }
});
