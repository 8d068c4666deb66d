// Seed 004's Socket.IO clients against the real binary: socket.io-client v4
// under Node over WebSocket only, polling only, and polling upgraded to
// WebSocket; python-socketio's AsyncClient; auth accepted and refused;
// notifications published through the API reaching exactly the project's
// members on Socket.IO and the native dialect; a reply in flight finished
// with resume_stream after a drop.
import { test, expect } from '@playwright/test';
import { execFileSync, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import WebSocket from 'ws';
import { JWT_SECRET, PORT, RILL_BIN } from '../playwright.config';
import { startRill } from './helpers';

const URL = `http://127.0.0.1:${PORT}`;
const CLIENT = path.resolve(__dirname, '../compat/seed004_client.mjs');

function lastJsonLine(output: string): any {
  const lines = output.trim().split('\n');
  return JSON.parse(lines[lines.length - 1]);
}

function nodeClient(url: string, ...args: string[]): any {
  return lastJsonLine(execFileSync('node', [CLIENT, url, ...args], { timeout: 60_000 }).toString());
}

/** Seed 004's client as a member of project 1 waiting for `event`, once it
 * waits; `summary` is its summary once the event has come. (Not a bare
 * promise: an async function's returned promise would be awaited with it.) */
async function waitingMember(url: string, event: string): Promise<{ summary: Promise<any> }> {
  const member = spawn('node', [CLIENT, url, 'websocket', '', event]);
  let out = '';
  member.stdout.on('data', (chunk) => (out += chunk));
  await expect.poll(() => out.includes('WAITING'), { timeout: 20_000 }).toBe(true);
  return { summary: new Promise((resolve) => member.once('exit', () => resolve(lastJsonLine(out)))) };
}

function mintToken(sub: string, secret = JWT_SECRET): string {
  return execFileSync(RILL_BIN, ['--jwt-secret', secret, 'token', '--sub', sub]).toString().trim();
}

for (const transports of ['websocket', 'polling', 'upgrade', 'websocket,polling']) {
  test(`seed 004's socket.io-client flow over ${transports}`, async () => {
    const summary = nodeClient(URL, transports);
    expect(summary.end).toBe('done');
    expect(summary.errors).toEqual([]);
    expect(summary.status).toBe('connected');
    expect(summary.joined).toBe(1);
    expect(summary.received).toBe(1);
    expect(summary.sources).toEqual([]);
    expect(summary.text).toContain('What is this document about?');
    expect(summary.complete.response).toBe(summary.text);
    expect(summary.complete.metadata.model).toBe('demo');
    expect(summary.complete.metadata.sources_count).toBe(0);
    expect(summary.latency).toBeGreaterThanOrEqual(0);
    expect(summary.latency).toBeLessThan(5000);
    expect(summary.left).toBe(1);
    expect(summary.transport).toBe(transports === 'polling' ? 'polling' : 'websocket');
  });
}

test("seed 004's events from python-socketio's AsyncClient, both transports", async () => {
  const python = path.resolve(__dirname, '../.venv/bin/python');
  const script = path.resolve(__dirname, '../compat/seed004_client.py');
  for (const transports of ['websocket', 'polling']) {
    const summary = lastJsonLine(execFileSync(python, [script, URL, transports], { timeout: 60_000 }).toString());
    expect(summary.connect_error).toBeNull();
    expect(summary.errors).toEqual([]);
    expect(summary.joined).toBe(1);
    expect(summary.complete.response).toBe(summary.text);
    expect(summary.text).toContain('Hello from Python');
  }
});

test('a Socket.IO client that drops mid-reply finishes it with resume_stream, word-perfect', async () => {
  const script = path.resolve(__dirname, '../compat/seed004_resume.mjs');
  const summary = lastJsonLine(execFileSync('node', [script, URL], { timeout: 60_000 }).toString());
  expect(summary.end).toBe('complete');
  expect(summary.errors).toEqual([]);
  expect(summary.rest.length).toBeGreaterThan(0);
  expect(summary.first + summary.rest).toBe(summary.response);
});

test('auth: a bad token is a connect_error; --auth-required refuses no token and accepts a good one', async () => {
  expect(nodeClient(URL, 'websocket', 'not-a-token').connect_error).toBe('Invalid token');
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'rill-sio-auth-'));
  const rill = await startRill(['--data-dir', dataDir, '--jwt-secret', 'sio-secret', '--auth-required', '--demo-delay-ms', '2']);
  try {
    const refused = nodeClient(rill.url, 'websocket');
    expect(refused.end).toBe('connect_error');
    expect(refused.connect_error).toContain('Authentication required');
    const accepted = nodeClient(rill.url, 'polling', mintToken('sio-user', 'sio-secret'));
    expect(accepted.end).toBe('done');
    expect(accepted.complete.response).toBe(accepted.text);
  } finally {
    await rill.stop();
    fs.rmSync(dataDir, { recursive: true, force: true });
  }
});

test("a published notification reaches exactly the project's members, on Socket.IO and the native dialect", async () => {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'rill-sio-rooms-'));
  const rill = await startRill(['--data-dir', dataDir, '--api-key', 'rooms-key']);
  try {
    // A Socket.IO member of project 1 waiting for document_status.
    const member = await waitingMember(rill.url, 'document_status');
    // A native member of the same project, and one of another project.
    const native = new WebSocket(`ws://127.0.0.1:${rill.port}/ws/chat`);
    const other = new WebSocket(`ws://127.0.0.1:${rill.port}/ws/chat`);
    const frames: any[] = [];
    const otherFrames: any[] = [];
    native.on('message', (data) => frames.push(JSON.parse(String(data))));
    other.on('message', (data) => otherFrames.push(JSON.parse(String(data))));
    await Promise.all([native, other].map((ws) => new Promise((r) => ws.once('open', r))));
    native.send(JSON.stringify({ type: 'join', room: 'project_1' }));
    other.send(JSON.stringify({ type: 'join', room: 'project_2' }));
    await expect.poll(() => frames.some((f) => f.type === 'joined')).toBe(true);
    await expect.poll(() => otherFrames.some((f) => f.type === 'joined')).toBe(true);

    const presence = await (await fetch(`${rill.url}/api/v1/rooms/project_1/presence`, {
      headers: { authorization: 'Bearer rooms-key' },
    })).json();
    expect(presence.members).toEqual([{ user: 'public', connections: 2 }]);

    const denied = await fetch(`${rill.url}/api/v1/rooms/project_1/publish`, {
      method: 'POST',
      body: JSON.stringify({ event: 'document_status', data: {} }),
    });
    expect(denied.status).toBe(401);
    const published = await fetch(`${rill.url}/api/v1/rooms/project_1/publish`, {
      method: 'POST',
      headers: { authorization: 'Bearer rooms-key' },
      body: JSON.stringify({ event: 'document_status', data: { document_id: 5, status: 'completed', progress: 100 } }),
    });
    expect((await published.json()).delivered).toBe(2);
    const summary = await member.summary;
    expect(summary.end).toBe('notified');
    expect(summary.notifications).toEqual([
      { event: 'document_status', data: { document_id: 5, status: 'completed', progress: 100 } },
    ]);
    await expect
      .poll(() => frames.find((f) => f.type === 'room_event'))
      .toEqual({ type: 'room_event', room: 'project_1', event: 'document_status', data: { document_id: 5, status: 'completed', progress: 100 } });
    expect(otherFrames.filter((f) => f.type === 'room_event')).toEqual([]);
    native.close();
    other.close();
  } finally {
    await rill.stop();
    fs.rmSync(dataDir, { recursive: true, force: true });
  }
});

test("seed 004's client in a project with a document gets its passages as message_sources, and document_status while it indexes", async () => {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'rill-sio-docs-'));
  const rill = await startRill(['--data-dir', dataDir, '--demo-delay-ms', '2']);
  try {
    // A member of project 1 waiting for the document's completion…
    const member = await waitingMember(rill.url, 'document_status');
    // …hears it when the upload (by the same anonymous owner) starts processing.
    const form = new FormData();
    const guide = '# Guide\n\nThis document describes the Acme onboarding: badges are handed out on the first morning.\n';
    form.append('file', new Blob([guide], { type: 'text/markdown' }), 'guide.md');
    const uploaded = await fetch(`${rill.url}/api/v1/projects/1/documents`, { method: 'POST', body: form });
    expect(uploaded.status).toBe(202);
    const { document_id } = await uploaded.json();
    const heard = await member.summary;
    // Added to the project, then its processing: seed 004's two notifications.
    expect(heard.notifications[0]).toMatchObject({ event: 'project_update', data: { type: 'document_added', data: { document_id, filename: 'guide.md' } } });
    expect(heard.notifications[1]).toMatchObject({ event: 'document_status', data: { document_id, status: 'processing', progress: 0 } });
    await expect
      .poll(async () => (await (await fetch(`${rill.url}/api/v1/projects/1/documents/${document_id}`)).json()).status)
      .toBe('completed');

    // The seed's own question in project 1 now retrieves the guide.
    const summary = nodeClient(rill.url, 'websocket');
    expect(summary.end).toBe('done');
    expect(summary.errors).toEqual([]);
    expect(summary.sources.length).toBe(1);
    expect(summary.sources[0].metadata).toEqual({ document_id, filename: 'guide.md' });
    expect(summary.sources[0].content).toContain('badges are handed out');
    expect(summary.sources[0].score).toBeGreaterThan(0);
    expect(summary.complete.metadata.sources_count).toBe(1);
    expect(summary.text).toMatch(/^According to \*\*guide\.md\*\* \[1\]: "This document describes the Acme onboarding/);
  } finally {
    await rill.stop();
    fs.rmSync(dataDir, { recursive: true, force: true });
  }
});
