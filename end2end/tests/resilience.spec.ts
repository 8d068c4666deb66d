// The UI keeps a reply word-perfect across dropped WebSockets, falls back to SSE
// and to long-polling when those are refused, and says what happened when the
// server restarts mid-reply.
import { test, expect, WebSocketRoute } from '@playwright/test';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { PORT } from '../playwright.config';
import { ask, referenceReply, startRill, waitLive } from './helpers';

/** The shared server's address (the demo is deterministic: its replies are the reference). */
const SERVER = `http://127.0.0.1:${PORT}`;

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
  expect(completes[0]).toBe(await referenceReply(SERVER, question));
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
  await expect(reply).toHaveAttribute('data-raw', await referenceReply(SERVER, question));
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
  await expect(reply).toHaveAttribute('data-raw', await referenceReply(SERVER, question));
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
  const expected = await referenceReply(SERVER, question);
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

/** Flags of a rill of our own, so the test can restart it. */
const RESTARTABLE = ['--demo-delay-ms', '40', '--demo-tokens', '400', '--shutdown-grace', '1'];

test('a server restart mid-reply: the UI reconnects and marks the reply interrupted', async ({ page }) => {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'rill-restart-'));
  let rill = await startRill(['--data-dir', dataDir, ...RESTARTABLE]);
  try {
    await page.goto(`${rill.url}/`);
    await waitLive(page);
    await ask(page, 'A long answer, please');
    const reply = page.locator('article.msg.assistant').last();
    await expect(reply).toHaveAttribute('data-status', 'streaming');
    await expect(reply.locator('.markdown')).toContainText('You asked');
    await rill.stop('SIGTERM');
    rill = await startRill(['--data-dir', dataDir, ...RESTARTABLE], { port: rill.port });
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
    await rill.stop();
    fs.rmSync(dataDir, { recursive: true, force: true });
  }
});
