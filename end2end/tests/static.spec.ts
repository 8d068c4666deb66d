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
let site: string;

test.beforeAll(async () => {
  // Deploy: copy the build and set the API base in the deployed index.html.
  site = fs.mkdtempSync(path.join(os.tmpdir(), 'rill-static-'));
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
  fs.rmSync(site, { recursive: true, force: true });
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

test('the static UI is the same product: a guest identity, the sidebar, addresses, export', async ({ page, browser }) => {
  const site = `http://127.0.0.1:${STATIC_PORT}/`;
  await page.goto(site);
  await expect(page.locator('.badge')).toHaveText('Live · WebSocket');
  // A guest identity, kept in local storage (the API is on another origin:
  // no cookie of the page's reaches it).
  const token = await page.evaluate(() => localStorage.getItem('rill_token'));
  expect(token).toBeTruthy();
  const question = 'Remember me, static page';
  await ask(page, question);
  await expect(page.locator('article.msg.assistant').last()).toHaveAttribute('data-status', 'complete');
  await expect(page).toHaveURL(/\?c=[^&#]+$/);
  await expect(page.locator('.conversation.current .conversation-link')).toHaveText(question);
  // The server keeps it for this guest.
  const mine = await page.request.get(`${API}/api/v1/conversations`, {
    headers: { authorization: `Bearer ${token}` },
  });
  expect((await mine.json()).conversations.map((c: any) => c.title)).toContain(question);

  // A reload opens it again, history and sidebar from the server.
  const url = page.url();
  await page.reload();
  await expect(page.locator('.badge')).toHaveText('Live · WebSocket');
  await expect(page.locator('article.msg.user')).toHaveText([new RegExp(question)]);
  await expect(page.locator('article.msg.assistant')).toHaveAttribute('data-status', 'complete');
  await expect(page.locator('.conversation-link', { hasText: question })).toHaveCount(1);

  // New chat, then back through the sidebar.
  await page.locator('a.new-chat').click();
  await expect(page.locator('.badge')).toHaveText('Live · WebSocket');
  await expect(page.locator('article.msg')).toHaveCount(0);
  await page.locator('.conversation-link', { hasText: question }).click();
  await expect(page.locator('article.msg.user')).toHaveCount(1);

  // Export goes to the API's server with the guest's token.
  const href = await page.locator('nav.export a').first().getAttribute('href');
  expect(href).toContain(`${API}/api/v1/conversations/`);
  const exported = await page.request.get(href!);
  expect(exported.status()).toBe(200);
  expect(await exported.text()).toContain(question);

  // Another browser has its own identity: the address does not open it.
  const stranger = await browser.newContext();
  const other = await stranger.newPage();
  await other.goto(url);
  await expect(other.locator('.notices')).toContainText('belongs to someone else');
  await expect(other.locator('article.msg')).toHaveCount(0);
  await stranger.close();
});
