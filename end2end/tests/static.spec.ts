// The client-side-only UI built by trunk, hosted as static files on another
// origin and pointed at rill by its <meta name="rill-api-base">.
import { test, expect } from '@playwright/test';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as os from 'node:os';
import * as path from 'node:path';
import { PORT, STATIC_PORT } from '../playwright.config';
import { ask, referenceReply } from './helpers';

const DIST = path.resolve(__dirname, '../../frontend/dist');
const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript',
  '.wasm': 'application/wasm',
  '.css': 'text/css',
};

let server: http.Server;

test.beforeAll(async () => {
  // Deploy: copy the build and set the API base in the deployed index.html.
  const site = fs.mkdtempSync(path.join(os.tmpdir(), 'rill-static-'));
  fs.cpSync(DIST, site, { recursive: true });
  const index = path.join(site, 'index.html');
  const html = fs.readFileSync(index, 'utf8');
  expect(html).toContain('<meta name="rill-api-base" content="">');
  fs.writeFileSync(index, html.replace('content=""', `content="http://127.0.0.1:${PORT}"`));
  server = http.createServer((request, response) => {
    const name = decodeURIComponent(new URL(request.url ?? '/', 'http://x').pathname);
    const file = path.join(site, name === '/' ? 'index.html' : path.normalize(name));
    if (!file.startsWith(site) || !fs.existsSync(file) || fs.statSync(file).isDirectory()) {
      response.writeHead(404).end();
      return;
    }
    response.writeHead(200, { 'content-type': TYPES[path.extname(file)] ?? 'application/octet-stream' });
    fs.createReadStream(file).pipe(response);
  });
  await new Promise<void>((resolve) => server.listen(STATIC_PORT, '127.0.0.1', resolve));
});

test.afterAll(async () => {
  await new Promise((resolve) => server.close(resolve));
});

const API = `http://127.0.0.1:${PORT}`;

test('the static UI on another origin streams a reply from rill', async ({ page }) => {
  await page.goto(`http://127.0.0.1:${STATIC_PORT}/`);
  await expect(page.locator('.badge')).toHaveText('Live · WebSocket');
  const question = 'Hello from a static page';
  await ask(page, question);
  const reply = page.locator('article.msg.assistant').last();
  await expect(reply).toHaveAttribute('data-status', 'complete');
  await expect(reply).toHaveAttribute('data-raw', await referenceReply(API, question));
  await expect(reply.locator('pre > code')).toContainText('fn main()');
});

test('the static UI falls back to SSE across origins (CORS)', async ({ page }) => {
  await page.routeWebSocket('**/ws/chat', (ws) => ws.close({ code: 4003, reason: 'refused by the test' }));
  await page.goto(`http://127.0.0.1:${STATIC_PORT}/`);
  await expect(page.locator('.badge')).toHaveText('Fallback · SSE', { timeout: 30_000 });
  const question = 'Static page over server-sent events';
  await ask(page, question);
  const reply = page.locator('article.msg.assistant').last();
  await expect(reply).toHaveAttribute('data-status', 'complete', { timeout: 30_000 });
  await expect(reply).toHaveAttribute('data-raw', await referenceReply(API, question));
});
