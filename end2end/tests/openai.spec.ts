// The UI against rill --provider openai, itself against a local server that
// speaks the OpenAI chat completions streaming format: the model picker lists
// the upstream's models, and the chosen one answers, token by token.
import { test, expect } from '@playwright/test';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { ask, Rill, startRill, waitLive } from './helpers';

const seenModels: string[] = [];
let upstream: http.Server;
let rill: Rill;
let dataDir: string;

function chunk(model: string, delta: object, finish: string | null): string {
  const body = {
    id: 'chatcmpl-e2e',
    object: 'chat.completion.chunk',
    created: 1,
    model,
    choices: [{ index: 0, delta, finish_reason: finish }],
  };
  return `data: ${JSON.stringify(body)}\n\n`;
}

test.beforeAll(async () => {
  upstream = http.createServer((request, response) => {
    if (request.method === 'GET' && request.url === '/v1/models') {
      response.writeHead(200, { 'content-type': 'application/json' });
      response.end(JSON.stringify({ object: 'list', data: [{ id: 'alpha' }, { id: 'beta' }] }));
      return;
    }
    let body = '';
    request.on('data', (part) => (body += part));
    request.on('end', async () => {
      const model = JSON.parse(body).model as string;
      seenModels.push(model);
      response.writeHead(200, { 'content-type': 'text/event-stream' });
      for (const token of ['Model ', model, ' says', ' **hi**']) {
        response.write(chunk(model, { content: token }, null));
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
      response.write(chunk(model, {}, 'stop'));
      response.end('data: [DONE]\n\n');
    });
  });
  await new Promise<void>((resolve) => upstream.listen(0, '127.0.0.1', resolve));
  const upstreamPort = (upstream.address() as net.AddressInfo).port;
  dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'rill-openai-'));
  rill = await startRill(
    ['--data-dir', dataDir, '--provider', 'openai', '--openai-base-url', `http://127.0.0.1:${upstreamPort}/v1`, '--model', 'alpha'],
    { env: { OPENAI_API_KEY: 'e2e-key' } },
  );
});

test.afterAll(async () => {
  await rill.stop();
  fs.rmSync(dataDir, { recursive: true, force: true });
  await new Promise((resolve) => upstream.close(resolve));
});

test('the model picker lists the upstream models and the chosen one answers', async ({ page }) => {
  await page.goto(`${rill.url}/`);
  await waitLive(page);
  const picker = page.locator('.model-picker select');
  await expect(picker).toBeVisible();
  await expect(picker.locator('option')).toHaveText(['alpha', 'beta']);
  await expect(picker).toHaveValue('alpha');
  await picker.selectOption('beta');
  await ask(page, 'Who are you?');
  const reply = page.locator('article.msg.assistant').last();
  await expect(reply).toHaveAttribute('data-status', 'streaming');
  await expect(reply).toHaveAttribute('data-status', 'complete');
  await expect(reply).toHaveAttribute('data-raw', 'Model beta says **hi**');
  await expect(reply.locator('strong')).toHaveText('hi');
  expect(seenModels).toEqual(['beta']);
});
