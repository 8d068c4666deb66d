// Seed 003's own client flows (its Python `websockets` client and its JS
// `ChatWebSocket` class under Node) against the real binary.
import { test, expect } from '@playwright/test';
import { execFileSync } from 'node:child_process';
import * as path from 'node:path';
import { JWT_SECRET, PORT, RILL_BIN } from '../playwright.config';

const WS_URL = `ws://127.0.0.1:${PORT}/ws/chat`;

function mintToken(sub: string): string {
  return execFileSync(RILL_BIN, ['--jwt-secret', JWT_SECRET, 'token', '--sub', sub, '--email', `${sub}@example.com`, '--name', 'Seed User'])
    .toString()
    .trim();
}

function lastJsonLine(output: string): any {
  const lines = output.trim().split('\n');
  return JSON.parse(lines[lines.length - 1]);
}

test('seed 003 Python client (websockets) streams a reply', async () => {
  const python = path.resolve(__dirname, '../.venv/bin/python');
  const script = path.resolve(__dirname, '../compat/seed003_client.py');
  const output = execFileSync(python, [script, WS_URL, mintToken('python-user')], { timeout: 60_000 }).toString();
  expect(output).toContain('Authenticated!');
  expect(output).toContain('[starting] Processing started');
  expect(output).toContain('Agent: assistant');
  const summary = lastJsonLine(output);
  expect(summary.error).toBeNull();
  expect(summary.user.id).toBe('python-user');
  expect(summary.response).toBe(summary.accumulated);
  expect(summary.response).toContain('What is the engine power?');
  expect(summary.agent).toBe('assistant');
  expect(summary.session_id).toBe('python-session-1');
  expect(summary.steps).toEqual(['starting', 'generating']);
});

test('seed 003 Python client reports a bad token as the seed expects', async () => {
  const python = path.resolve(__dirname, '../.venv/bin/python');
  const script = path.resolve(__dirname, '../compat/seed003_client.py');
  let output = '';
  try {
    execFileSync(python, [script, WS_URL, 'your_jwt_token'], { timeout: 60_000 });
  } catch (error: any) {
    output = error.stdout.toString();
  }
  expect(output).toContain('Authentication failed');
  expect(lastJsonLine(output).error.type).toBe('auth_error');
});

test('seed 003 JS ChatWebSocket class under Node streams a reply', async () => {
  const script = path.resolve(__dirname, '../compat/seed003_client.mjs');
  const output = execFileSync('node', [script, WS_URL, mintToken('js-user')], { timeout: 60_000 }).toString();
  expect(output).toContain('Connected');
  expect(output).toContain('Authenticated:');
  expect(output).toContain('Agent: assistant');
  const summary = lastJsonLine(output);
  expect(summary.errors).toEqual([]);
  expect(summary.response).toBe(summary.response_text);
  expect(summary.response).toContain('What is the engine power?');
  expect(summary.agent).toBe('assistant');
  expect(summary.steps).toEqual(['starting', 'generating']);
});

test("seed 002's JS example: openai_chat, persona chat and multi_chat over /ws", async () => {
  const script = path.resolve(__dirname, '../compat/seed002_client.mjs');
  const output = execFileSync('node', [script, `ws://127.0.0.1:${PORT}/ws`], { timeout: 60_000 }).toString();
  expect(output).toContain('Connected to WebSocket');
  const summary = lastJsonLine(output);
  expect(summary.errors).toEqual([]);
  expect(summary.responses).toHaveLength(3);
  // openai_chat: the chunks written make the response's text.
  expect(summary.chunks[0]).toContain('Hello, world!');
  expect(summary.responses[0].output_text).toBe(summary.chunks[0]);
  expect(typeof summary.responses[0].response_id).toBe('string');
  // chat: the persona's voice.
  expect(summary.responses[1].persona_id).toBe('tech_enthusiast');
  expect(summary.responses[1].response).toBe(summary.chunks[1]);
  // multi_chat: one persona_response each, then the combined response.
  const personas = ['tech_enthusiast', 'creative_writer', 'data_scientist'];
  expect(summary.persona_responses.map((r: any) => r.persona_id).sort()).toEqual([...personas].sort());
  expect(summary.responses[2].responses.map((r: any) => r.persona_id)).toEqual(personas);
  for (const answer of summary.persona_responses) {
    expect(summary.responses[2].responses[answer.index].response).toBe(answer.response);
  }
  expect(summary.statuses).toContain('starting');
  expect(summary.statuses).toContain('streaming');
});
