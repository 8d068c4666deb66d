// The browser part of `./x bench` (BENCHMARKS.md): how the UI holds up while a
// very long reply streams in, how it opens and scrolls a long conversation,
// and how much the browser has to download.
//
//   node end2end/bench/browser.mjs --rill target/release/rill --out target/bench \
//        [--tokens 10000] [--runs 3] [--messages 1000]
//
// For each run it starts the release binary on a free port (fresh data dir, demo
// provider at full speed, replies of `--tokens` words), opens the UI in Debian's
// Chromium, asks one question and records every main-thread task over 50 ms
// (the browser's own Long Tasks API) and every long animation frame from the
// question to the reply's `complete`. It also weighs the wasm of both UI builds
// (the hydrate build the binary embeds, and trunk's static build if present),
// raw and gzip'd at level 9.
//
// The long-chat case stores a conversation of `--messages` messages (half
// questions, half demo replies with a code block) through the HTTP API as the
// browser's own guest, opens its page, and records the main thread's long tasks
// while the page loads and hydrates, then while it is read upwards from its
// end to its first message a screen per frame (earlier messages join the page
// on the way) and down again. Writes browser.json next to the suite's report.
import { chromium } from '@playwright/test';
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import * as zlib from 'node:zlib';

const args = Object.fromEntries(
  process.argv.slice(2).reduce((pairs, arg, i, all) => {
    if (arg.startsWith('--')) pairs.push([arg.slice(2), all[i + 1]]);
    return pairs;
  }, []),
);
const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), '../..');
const rillBin = path.resolve(args.rill ?? path.join(root, 'target/release/rill'));
const outDir = path.resolve(args.out ?? path.join(root, 'target/bench'));
const tokens = Number(args.tokens ?? 10000);
const runs = Number(args.runs ?? 3);
const longChatMessages = Number(args.messages ?? 1000);
const serverCore = args['server-core'];

function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

async function startRill(replyTokens = tokens, extra = []) {
  const port = await freePort();
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'rill-bench-browser-'));
  const rillArgs = [
    '--addr', `127.0.0.1:${port}`, '--data-dir', dataDir, '--demo-delay-ms', '0',
    '--demo-tokens', String(replyTokens), ...extra,
  ];
  const [cmd, cmdArgs] = serverCore !== undefined ? ['taskset', ['-c', serverCore, rillBin, ...rillArgs]] : [rillBin, rillArgs];
  const child = spawn(cmd, cmdArgs, { cwd: os.tmpdir(), stdio: ['ignore', 'pipe', 'pipe'] });
  let log = '';
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`rill did not start:\n${log}`)), 30_000);
    child.stdout.on('data', (chunk) => {
      log += chunk;
      if (log.includes('listening on')) {
        clearTimeout(timer);
        resolve();
      }
    });
    child.stderr.on('data', (chunk) => (log += chunk));
    child.once('exit', (code) => reject(new Error(`rill exited (${code}):\n${log}`)));
  });
  return {
    url: `http://127.0.0.1:${port}`,
    async stop() {
      const exited = new Promise((resolve) => child.once('exit', resolve));
      child.kill('SIGTERM');
      await exited;
      fs.rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

/** Records the page's long tasks and long animation frames in `window.__long`
 * from its first script on. */
async function observeLongTasks(page) {
  await page.addInitScript(() => {
      window.__long = { tasks: [], frames: [] };
      new PerformanceObserver((list) => {
        for (const e of list.getEntries()) window.__long.tasks.push({ start: e.startTime, duration: e.duration });
      }).observe({ type: 'longtask', buffered: true });
      try {
        new PerformanceObserver((list) => {
          for (const e of list.getEntries())
            window.__long.frames.push({
              start: e.startTime,
              duration: e.duration,
              blocking: e.blockingDuration,
              // What ran in the frame, longest first: says where a long one went.
              scripts: [...(e.scripts ?? [])]
                .sort((a, b) => b.duration - a.duration)
                .slice(0, 3)
                .map((s) => ({ invoker: s.invoker, duration: Math.round(s.duration) })),
            });
        }).observe({ type: 'long-animation-frame', buffered: true });
      } catch {
        // older browsers: no long animation frames
      }
  });
}

/** One question, one very long reply: the main thread's long tasks meanwhile. */
async function oneRun(browser) {
  const rill = await startRill();
  try {
    const page = await browser.newPage();
    // Observers from the first script on, so nothing before the question is missed
    // (entries before the question are dropped below).
    await observeLongTasks(page);
    await page.goto(rill.url);
    await page.locator('.badge[data-state="live"]').waitFor({ timeout: 30_000 });
    const asked = await page.evaluate(() => performance.now());
    await page.locator('#composer-input').fill('Tell me everything about streaming.');
    await page.locator('#composer-input').press('Enter');
    const reply = page.locator('article.msg.assistant').last();
    await reply.locator('xpath=self::*[@data-status="complete"]').waitFor({ timeout: 120_000 });
    // Let the last frame paint and its observers report.
    await page.waitForTimeout(300);
    const done = await page.evaluate(() => performance.now());
    const raw = await reply.getAttribute('data-raw');
    const words = raw.split(/\s+/).filter(Boolean).length;
    const shown = (await reply.locator('.markdown').innerText()).length;
    const long = await page.evaluate(() => window.__long);
    const inWindow = (e) => e.start >= asked && e.start <= done;
    const tasks = long.tasks.filter(inWindow);
    const frames = long.frames.filter(inWindow);
    await page.close();
    const worstFrame = frames.reduce((worst, f) => (!worst || f.blocking > worst.blocking ? f : worst), null);
    return {
      reply_words: words,
      reply_chars: raw.length,
      shown_chars: shown,
      question_to_complete_ms: Math.round(done - 300 - asked),
      long_tasks: tasks.length,
      longest_task_ms: Math.round(Math.max(0, ...tasks.map((t) => t.duration))),
      long_animation_frames: frames.length,
      longest_frame_blocking_ms: Math.round(Math.max(0, ...frames.map((f) => f.blocking ?? 0))),
      // When the long tasks ran, from the question (ms), and what filled the
      // most blocked frame.
      long_task_at_ms: tasks.map((t) => Math.round(t.start - asked)),
      worst_frame_scripts: worstFrame?.scripts ?? [],
    };
  } finally {
    await rill.stop();
  }
}

/** A conversation of `messages` messages: how its page opens and scrolls. */
async function longChatRun(browser, messages) {
  // No question rate: the conversation is stored as fast as the API answers.
  const rill = await startRill(60, ['--rate-limit-user', '0', '--rate-limit-ip', '0']);
  try {
    const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
    const page = await context.newPage();
    await page.goto(rill.url);
    await page.locator('.badge[data-state="live"]').waitFor({ timeout: 30_000 });
    // The browser's guest identity (its cookie) asks every question.
    const token = (await context.cookies()).find((c) => c.name === 'rill_token').value;
    const session = `long-chat-${Date.now()}`;
    const started = Date.now();
    for (let i = 0; i < messages / 2; i++) {
      const response = await fetch(`${rill.url}/api/v1/chat`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
        body: JSON.stringify({ message: `Question ${i + 1}: show me some code about streaming`, session_id: session }),
      });
      if (!response.ok) throw new Error(`question ${i + 1}: HTTP ${response.status} ${await response.text()}`);
    }
    const storeMs = Date.now() - started;
    await page.close();

    const view = await context.newPage();
    await observeLongTasks(view);
    const opened = Date.now();
    await view.goto(`${rill.url}/c/${session}`);
    await view.locator('.badge[data-state="live"]').waitFor({ timeout: 60_000 });
    const openMs = Date.now() - opened;
    await view.waitForTimeout(500);
    const shown = await view.locator('article.msg').count();
    const afterOpen = await view.evaluate(() => performance.now());
    // Read it upwards from its end, a screen per frame, to its first message
    // (earlier messages join the page as the top nears), then down again.
    const steps = await view.evaluate(async () => {
      const frame = () => new Promise((r) => requestAnimationFrame(r));
      let steps = 0;
      while (steps < 20000) {
        const more = document.querySelector('button.earlier');
        if (window.scrollY <= 0 && !more) break;
        // At the very top a wheel moves nothing: nudge, as a reader's next turn of it would.
        window.scrollBy(0, window.scrollY <= 0 ? 1 : -window.innerHeight);
        steps++;
        await frame();
      }
      while (window.scrollY + window.innerHeight < document.documentElement.scrollHeight - 2 && steps < 40000) {
        window.scrollBy(0, window.innerHeight);
        steps++;
        await frame();
      }
      return steps;
    });
    const shownAtEnd = await view.locator('article.msg').count();
    await view.waitForTimeout(300);
    const long = await view.evaluate(() => window.__long);
    await context.close();
    const opening = long.tasks.filter((t) => t.start < afterOpen);
    const scrolling = long.tasks.filter((t) => t.start >= afterOpen);
    const scrollFrames = long.frames.filter((f) => f.start >= afterOpen);
    return {
      messages_stored: messages,
      messages_shown: shown,
      messages_after_scrolling: shownAtEnd,
      store_ms: storeMs,
      open_to_live_ms: openMs,
      open_long_tasks: opening.length,
      open_longest_task_ms: Math.round(Math.max(0, ...opening.map((t) => t.duration))),
      scroll_screens: steps,
      scroll_long_tasks: scrolling.length,
      scroll_longest_task_ms: Math.round(Math.max(0, ...scrolling.map((t) => t.duration))),
      scroll_long_frames: scrollFrames.length,
      scroll_task_ms: scrolling.map((t) => Math.round(t.duration)),
    };
  } finally {
    await rill.stop();
  }
}

/** A wasm file's size raw and gzip'd at level 9, and of the precompressed
 * variants served beside it (`.gz`, `.br`), if any. */
function weigh(file) {
  if (!fs.existsSync(file)) return null;
  const bytes = fs.readFileSync(file);
  const size = (variant) => (fs.existsSync(variant) ? fs.statSync(variant).size : null);
  return {
    file: path.relative(root, file),
    raw: bytes.length,
    gzip: zlib.gzipSync(bytes, { level: 9 }).length,
    served_gzip: size(`${file}.gz`),
    served_brotli: size(`${file}.br`),
  };
}

function findWasm(dir) {
  if (!fs.existsSync(dir)) return null;
  const wasm = fs.readdirSync(dir).filter((f) => f.endsWith('.wasm'));
  return wasm.length ? path.join(dir, wasm[0]) : null;
}

/** The chunks split out of the hydrate build (every wasm beside `rill.wasm`),
 * fetched when their views are first shown; weighed one by one and together. */
function weighChunks(dir) {
  if (!fs.existsSync(dir)) return null;
  const chunks = fs
    .readdirSync(dir)
    .filter((f) => f.endsWith('.wasm') && f !== 'rill.wasm')
    .sort()
    .map((f) => weigh(path.join(dir, f)));
  if (!chunks.length) return null;
  const sum = (key) => (chunks.every((c) => c[key] != null) ? chunks.reduce((n, c) => n + c[key], 0) : null);
  return {
    file: `${chunks.length} chunks`,
    raw: sum('raw'),
    gzip: sum('gzip'),
    served_gzip: sum('served_gzip'),
    served_brotli: sum('served_brotli'),
    chunks,
  };
}

const median = (values) => {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
};

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM_PATH ?? '/usr/bin/chromium',
  args: [
    '--no-sandbox',
    '--disable-gpu',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
    '--no-first-run',
    '--disable-quic',
  ],
});
const results = [];
const longChats = [];
try {
  for (let i = 0; i < runs; i++) {
    const result = await oneRun(browser);
    results.push(result);
    console.log(`browser run ${i + 1}/${runs}: ${JSON.stringify(result)}`);
  }
  for (let i = 0; longChatMessages > 0 && i < runs; i++) {
    const result = await longChatRun(browser, longChatMessages);
    longChats.push(result);
    console.log(`long chat run ${i + 1}/${runs}: ${JSON.stringify(result)}`);
  }
} finally {
  await browser.close();
}
const staticWasm = findWasm(path.join(root, 'frontend/dist'));
const report = {
  tokens_asked: tokens,
  runs: results,
  median: {
    question_to_complete_ms: median(results.map((r) => r.question_to_complete_ms)),
    long_tasks: median(results.map((r) => r.long_tasks)),
    longest_task_ms: median(results.map((r) => r.longest_task_ms)),
    longest_frame_blocking_ms: median(results.map((r) => r.longest_frame_blocking_ms)),
  },
  worst_task_ms: Math.max(...results.map((r) => r.longest_task_ms)),
  long_chat: longChats.length
    ? {
        runs: longChats,
        median: Object.fromEntries(
          ['open_to_live_ms', 'open_long_tasks', 'open_longest_task_ms', 'scroll_long_tasks', 'scroll_longest_task_ms'].map(
            (key) => [key, median(longChats.map((r) => r[key]))],
          ),
        ),
      }
    : null,
  wasm: {
    // What a page loads first; the split chunks come when their views open.
    hydrate: weigh(path.join(root, 'target/site/pkg/rill.wasm')),
    hydrate_chunks: weighChunks(path.join(root, 'target/site/pkg')),
    static: staticWasm ? weigh(staticWasm) : null,
  },
};
fs.mkdirSync(outDir, { recursive: true });
fs.writeFileSync(path.join(outDir, 'browser.json'), JSON.stringify(report, null, 2));
const kib = (n) => (n / 1024).toFixed(1);
console.log(
  `browser: ${tokens}-word reply in ${report.median.question_to_complete_ms} ms; ` +
    `main-thread tasks over 50 ms: ${report.median.long_tasks} (longest ${report.median.longest_task_ms} ms, worst run ${report.worst_task_ms} ms)`,
);
if (report.long_chat) {
  const m = report.long_chat.median;
  console.log(
    `long chat: ${longChatMessages} messages open (to live) in ${m.open_to_live_ms} ms with ${m.open_long_tasks} tasks over 50 ms ` +
      `(longest ${m.open_longest_task_ms} ms); scrolling: ${m.scroll_long_tasks} (longest ${m.scroll_longest_task_ms} ms)`,
  );
}
for (const [name, w] of Object.entries(report.wasm)) {
  if (!w) continue;
  const served = [w.served_gzip && `served .gz ${kib(w.served_gzip)}`, w.served_brotli && `.br ${kib(w.served_brotli)}`]
    .filter(Boolean)
    .join(', ');
  console.log(`wasm ${name}: ${kib(w.raw)} KiB raw, ${kib(w.gzip)} KiB gzip -9${served ? `, ${served} KiB` : ''} (${w.file})`);
}
console.log(`written ${path.join(outDir, 'browser.json')}`);
