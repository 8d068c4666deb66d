// Highlighted code with a copy button; math as MathML; usage and speed per reply and per conversation (with a price table);
// finding and sharing; accessibility (axe): search across conversations (Ctrl/Cmd+K) that opens the
// message it found, and a public read-only link that a stranger can open and
// that stops working when revoked.
import { test, expect } from '@playwright/test';
import AxeBuilder from '@axe-core/playwright';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { ask, startRill, waitLive } from './helpers';

test('Ctrl+K finds a word from an older conversation and jumps to the message', async ({ page }) => {
  await page.goto('/');
  await waitLive(page);
  await ask(page, 'Where is the vermilion lighthouse of Quoddy?');
  await expect(page.locator('article.msg.assistant').last()).toHaveAttribute('data-status', 'complete', { timeout: 30_000 });
  await expect(page).toHaveURL(/\/c\/[^/#]+$/);
  const older = new URL(page.url()).pathname;

  // A new chat about something else.
  await page.keyboard.press('Control+Shift+O');
  await expect(page).toHaveURL(/\/$/);
  await waitLive(page);
  await ask(page, 'Something unrelated about bread');
  await expect(page.locator('article.msg.assistant').last()).toHaveAttribute('data-status', 'complete', { timeout: 30_000 });

  await page.keyboard.press('Control+k');
  const dialog = page.getByRole('dialog', { name: 'Search your conversations' });
  await expect(dialog).toBeVisible();
  const box = dialog.getByRole('combobox');
  await expect(box).toBeFocused();
  await box.fill('vermil');
  const hits = dialog.locator('.search-hit');
  await expect(hits.first()).toBeVisible({ timeout: 10_000 });
  await expect(hits.first().locator('mark').first()).toHaveText(/vermilion/i);
  await expect(dialog.getByRole('status')).toContainText(/found|shown/);
  // Only the older conversation has the word.
  for (const title of await hits.locator('.search-hit-title').allTextContents()) {
    expect(title).toContain('vermilion');
  }
  await box.press('ArrowDown');
  await box.press('ArrowUp');
  await expect(hits.first()).toHaveAttribute('aria-selected', 'true');
  await box.press('Enter');
  await expect(page).toHaveURL(new RegExp(`${older}#m-`));
  const target = page.locator('article.msg:target');
  await expect(target).toBeVisible();
  await expect(target).toContainText(/vermilion/i);
  await expect(dialog).toBeHidden();

  // Nothing found says so; Esc closes without stopping anything. The jump
  // loaded the other conversation's page: its shortcuts work once it is
  // hydrated (the server-rendered message shows before that).
  await waitLive(page);
  await page.keyboard.press('Control+k');
  await page.getByRole('dialog').getByRole('combobox').fill('zzzqqqxxyy');
  await expect(page.getByRole('dialog').getByRole('status')).toHaveText('No messages match.');
  await page.keyboard.press('Escape');
  await expect(page.getByRole('dialog')).toBeHidden();
});

test('a search result on a branch not shown opens that branch at the message', async ({ page }) => {
  await page.goto('/');
  await waitLive(page);
  await ask(page, 'Tell me about the cerulean windmill');
  await expect(page.locator('article.msg.assistant').last()).toHaveAttribute('data-status', 'complete', { timeout: 30_000 });
  // Edited: the question about the windmill is now on a branch not shown.
  const question = page.locator('article.msg.user').first();
  await question.locator('button.edit').click();
  await question.locator('.edit-input').fill('Tell me about the saffron bridge');
  await question.locator('button.resend').click();
  await expect(page.locator('article.msg.assistant').last()).toHaveAttribute('data-raw', /saffron/, { timeout: 30_000 });
  await expect(page.locator('article.msg.user .version-label')).toHaveText('2/2');

  await page.keyboard.press('Control+k');
  const dialog = page.getByRole('dialog', { name: 'Search your conversations' });
  await dialog.getByRole('combobox').fill('cerulean');
  const hits = dialog.locator('.search-hit');
  await expect(hits.first()).toBeVisible({ timeout: 10_000 });
  await dialog.getByRole('combobox').press('Enter');
  const target = page.locator('article.msg:target');
  await expect(target).toBeVisible();
  await expect(target).toContainText(/cerulean/i);
  await expect(page.locator('article.msg.user .version-label')).toHaveText('1/2');
});

test('a shared link opens read-only in a fresh browser and stops working after revoke', async ({ page, browser }) => {
  await page.goto('/');
  await waitLive(page);
  await ask(page, 'Share this recipe for <b>plum</b> cake');
  await expect(page.locator('article.msg.assistant').last()).toHaveAttribute('data-status', 'complete', { timeout: 30_000 });
  const reply = (await page.locator('article.msg.assistant').last().getAttribute('data-raw'))!;

  await page.getByRole('button', { name: 'Share' }).click();
  const dialog = page.getByRole('dialog', { name: 'Share this conversation' });
  await expect(dialog.getByRole('status')).toContainText('Not shared');
  await dialog.getByLabel('Link works').selectOption({ label: '7 days' });
  await dialog.getByRole('button', { name: 'Create link' }).click();
  const input = dialog.getByLabel('Link', { exact: true });
  await expect(input).toHaveValue(/\/s\/[0-9a-f]{32}$/);
  const link = await input.inputValue();

  // A stranger: no cookie, no identity.
  const stranger = await browser.newContext();
  try {
    const shared = await stranger.newPage();
    const response = await shared.goto(link);
    expect(response!.status()).toBe(200);
    await expect(shared.locator('h1')).toHaveText('Share this recipe for <b>plum</b> cake');
    await expect(shared.locator('article.msg.user')).toHaveText('Share this recipe for <b>plum</b> cake');
    await expect(shared.locator('article.msg.assistant .markdown')).toContainText(reply.split(/\s+/).slice(0, 4).join(' '));
    await expect(shared.locator('.sidebar, textarea, .composer')).toHaveCount(0);

    // The owner stops sharing: the link says so.
    await dialog.getByRole('button', { name: 'Stop sharing' }).click();
    await expect(dialog.getByRole('status')).toContainText('Sharing stopped');
    await expect(input).toHaveCount(0);
    const gone = await shared.reload();
    expect(gone!.status()).toBe(410);
    await expect(shared.locator('h1')).toHaveText('This link was revoked');
    await expect(shared.locator('article.msg')).toHaveCount(0);
  } finally {
    await stranger.close();
  }
  await dialog.getByRole('button', { name: 'Close' }).click();
  await expect(dialog).toBeHidden();
});

test('each reply shows its tokens, speed and cost, the conversation its totals, after a reload too', async ({ page }) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rill-prices-'));
  const prices = path.join(dir, 'prices.toml');
  fs.writeFileSync(prices, '[[price]]\nmodel = "demo"\ninput_per_million = 3000\noutput_per_million = 15000\n');
  const rill = await startRill(['--data-dir', dir, '--prices', prices, '--demo-delay-ms', '5', '--demo-tokens', '60']);
  try {
    await page.goto(`${rill.url}/`);
    await waitLive(page);
    const figuresLine = /^\d+ in · \d+ out tokens · first token \d+\.\d\d s · \d+ tokens\/s · \$\d+\.\d{2,4}$/;
    await ask(page, 'How fast are you today?');
    const first = page.locator('article.msg.assistant').last();
    await expect(first).toHaveAttribute('data-status', 'complete', { timeout: 30_000 });
    await expect(first.locator('.figures')).toHaveText(figuresLine);
    await ask(page, 'And a second question');
    const second = page.locator('article.msg.assistant').last();
    await expect(second).toHaveAttribute('data-status', 'complete', { timeout: 30_000 });
    await expect(page.locator('article.msg.assistant .figures')).toHaveCount(2);
    // The totals are the sum of the two replies' counts.
    const counts = async () => {
      let prompt = 0;
      let completion = 0;
      for (const line of await page.locator('article.msg.assistant .figures').allTextContents()) {
        const [, p, c] = line.match(/^(\d+) in · (\d+) out/)!;
        prompt += Number(p);
        completion += Number(c);
      }
      return { prompt, completion };
    };
    const sum = await counts();
    const totals = page.locator('p.totals');
    await expect(totals).toHaveText(new RegExp(`^This conversation: ${sum.prompt} tokens in · ${sum.completion} out · \\$\\d+\\.\\d{2,4}$`));
    const before = await page.locator('article.msg.assistant .figures').allTextContents();
    const totalsBefore = await totals.textContent();
    await page.reload();
    await waitLive(page);
    await expect(page.locator('article.msg.assistant .figures')).toHaveText(before);
    await expect(totals).toHaveText(totalsBefore!);
  } finally {
    await rill.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('code is highlighted while it streams, labelled, and its copy button copies it', async ({ browser }) => {
  // Its own data directory (without one rill would use ./rill-data, kept
  // from run to run in the temporary directory).
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rill-code-'));
  const rill = await startRill(['--data-dir', dir, '--demo-delay-ms', '25', '--demo-tokens', '120']);
  const context = await browser.newContext();
  await context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: rill.url });
  const page = await context.newPage();
  try {
    await page.goto(`${rill.url}/`);
    await waitLive(page);
    await ask(page, 'Show me some code');
    const reply = page.locator('article.msg.assistant').last();
    const block = reply.locator('.code-block').first();
    // Highlighted before the reply ends: only the growing block is redone.
    await expect(block.locator('.hl-kw').first()).toBeVisible({ timeout: 30_000 });
    await expect(reply).toHaveAttribute('data-status', 'streaming');
    await expect(reply).toHaveAttribute('data-status', 'complete', { timeout: 30_000 });
    await expect(block.locator('.code-lang')).toHaveText('Rust');
    await expect(block.locator('pre > code.language-rust .hl-kw', { hasText: 'fn' }).first()).toBeVisible();
    const code = (await block.locator('code').textContent())!;
    expect(code).toContain('fn main()');
    const copy = block.getByRole('button', { name: 'Copy the code' });
    await copy.click();
    await expect(copy).toHaveText('Copied');
    expect(await page.evaluate(() => navigator.clipboard.readText())).toBe(code);
    await expect(copy).toHaveText('Copy', { timeout: 5_000 });
  } finally {
    await context.close();
    await rill.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('math renders as MathML, the same after a reload; TeX that does not parse shows as code', async ({ page }) => {
  await page.goto('/');
  await waitLive(page);
  await ask(page, String.raw`Explain $\frac{a}{b}$ and \[\sqrt{x^2+1}\] but not $\notacommand{x}$ today`);
  const reply = page.locator('article.msg.assistant').last();
  await expect(reply).toHaveAttribute('data-status', 'complete', { timeout: 30_000 });
  const check = async () => {
    await expect(reply.locator('.math math mfrac').first()).toBeVisible();
    await expect(reply.locator('.math-display math msqrt').first()).toBeVisible();
    await expect(reply.locator('code.math-error').first()).toContainText(String.raw`\notacommand{x}`);
    await expect(reply.locator('.math-pending')).toHaveCount(0);
  };
  await check();
  await page.reload();
  await waitLive(page);
  await check();
});

test('the sidebar loads older conversations as the reader scrolls down', async ({ page }) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rill-paging-'));
  const rill = await startRill(['--data-dir', dir, '--demo-tokens', '3', '--demo-delay-ms', '0']);
  try {
    await page.setViewportSize({ width: 1000, height: 600 });
    await page.goto(`${rill.url}/`); // the guest cookie
    await waitLive(page);
    for (let i = 0; i < 55; i++) {
      const answer = await page.request.post(`${rill.url}/api/v1/chat`, {
        data: { message: `Topic number ${i}`, session_id: `paged-${i}` },
      });
      expect(answer.ok()).toBe(true);
    }
    await page.reload();
    await waitLive(page);
    const entries = page.locator('.sidebar .conversation');
    await expect(entries).toHaveCount(50); // the first page
    await expect(entries.first()).toContainText('Topic number 54');
    const older = page.getByRole('button', { name: 'Older conversations' });
    await expect(older).toBeVisible();
    // Scrolling to the end of the page loads the rest by itself.
    await page.evaluate(() => window.scrollTo(0, document.documentElement.scrollHeight));
    await expect(entries).toHaveCount(55);
    await expect(entries.last()).toContainText('Topic number 0');
    await expect(older).toHaveCount(0);
  } finally {
    await rill.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('a long conversation opens at its end with its newest turns; earlier ones join as the reader scrolls up', async ({ page }) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rill-long-'));
  const rill = await startRill(['--data-dir', dir, '--demo-tokens', '3', '--demo-delay-ms', '0', '--rate-limit-user', '0']);
  try {
    await page.setViewportSize({ width: 1000, height: 700 });
    await page.goto(`${rill.url}/`); // the guest cookie
    await waitLive(page);
    for (let i = 0; i < 80; i++) {
      const answer = await page.request.post(`${rill.url}/api/v1/chat`, {
        data: { message: `Turn number ${i}`, session_id: 'long-one' },
      });
      expect(answer.ok()).toBe(true);
    }
    const stored = (await (await page.request.get(`${rill.url}/api/v1/conversations/long-one`)).json()).messages;
    expect(stored.length).toBe(160);
    // The page embeds the turns it shows apart from the earlier ones, which
    // the browser reads only when the part of the page showing them hydrates.
    const html = await (await page.request.get(`${rill.url}/c/long-one`)).text();
    const embedded = (id: string) =>
      JSON.parse(html.match(new RegExp(`<script type="application/json" id="${id}">(.*?)</script>`, 's'))![1]);
    expect(embedded('rill-initial').current.messages.length).toBe(20);
    expect(embedded('rill-earlier').length).toBe(140);
    await page.goto(`${rill.url}/c/long-one`);
    await waitLive(page);
    const messages = page.locator('article.msg');
    // The newest 10 turns, whole, with the end in view.
    await expect(messages).toHaveCount(20);
    await expect(messages.first()).toContainText('Turn number 70');
    await expect(messages.last()).toBeInViewport();
    await expect(page.getByRole('button', { name: 'Show earlier messages (140)' })).toHaveCount(1);
    // The totals count the replies not shown yet.
    await expect(page.locator('.totals')).toContainText('240 out');
    // Scrolled to the top, the earlier turns join, a chunk at a time, and
    // the message the reader was at stays in view.
    await page.evaluate(() => window.scrollTo(0, 0));
    await expect(messages).toHaveCount(36);
    await expect(page.locator(`#m-${stored[140].id}`)).toBeInViewport();
    await expect
      .poll(async () => {
        await page.evaluate(() => window.scrollTo(0, 0));
        return messages.count();
      })
      .toBe(160);
    await expect(messages.first()).toContainText('Turn number 0');
    await expect(page.locator('button.earlier')).toHaveCount(0);
    // A link to a message far up (a search result) opens the conversation there.
    await page.goto(`${rill.url}/c/long-one#m-${stored[2].id}`);
    await waitLive(page);
    await expect(page.locator(`#m-${stored[2].id}`)).toBeInViewport();
  } finally {
    await rill.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('axe finds no serious or critical violation on the chat page, the search dialog and a shared page, light and dark', async ({ page, browser }) => {
  const serious = async (builder: AxeBuilder) =>
    (await builder.analyze()).violations
      .filter((v) => v.impact === 'serious' || v.impact === 'critical')
      .map((v) => `${v.id}: ${v.nodes.map((n) => n.target.join(' ')).join(', ')}`);
  await page.goto('/');
  await waitLive(page);
  await ask(page, String.raw`Show me some code and $x^2$`);
  await expect(page.locator('article.msg.assistant').last()).toHaveAttribute('data-status', 'complete', { timeout: 30_000 });
  await page.getByRole('button', { name: 'Share' }).click();
  await page.getByRole('button', { name: 'Create link' }).click();
  const input = page.getByLabel('Link', { exact: true });
  await expect(input).toHaveValue(/\/s\//);
  const link = await input.inputValue();
  await page.getByRole('dialog').getByRole('button', { name: 'Close' }).click();
  const stranger = await browser.newContext();
  try {
    const shared = await stranger.newPage();
    for (const scheme of ['light', 'dark'] as const) {
      await page.emulateMedia({ colorScheme: scheme });
      expect(await serious(new AxeBuilder({ page })), `chat page, ${scheme}`).toEqual([]);
      await page.keyboard.press('Control+k');
      await page.getByRole('dialog').getByRole('combobox').fill('code');
      await expect(page.locator('.search-hit').first()).toBeVisible();
      expect(await serious(new AxeBuilder({ page }).include('.search')), `search, ${scheme}`).toEqual([]);
      await page.keyboard.press('Escape');
      await expect(page.getByRole('dialog')).toBeHidden();
      await shared.emulateMedia({ colorScheme: scheme });
      await shared.goto(link);
      expect(await serious(new AxeBuilder({ page: shared })), `shared page, ${scheme}`).toEqual([]);
    }
  } finally {
    await stranger.close();
  }
});
