// Conversations as a user meets them: history that survives a reload and a
// server killed mid-reply, the sidebar, branches (regenerate, edit-and-resend), delete.
import { test, expect, Page } from '@playwright/test';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { ask, startRill, waitLive } from './helpers';

/** Flags of a rill of our own, so the test can kill and restart it. */
const KILLABLE = ['--demo-delay-ms', '40', '--demo-tokens', '50', '--checkpoint-ms', '200'];

const assistant = (page: Page) => page.locator('article.msg.assistant');
const user = (page: Page) => page.locator('article.msg.user');

test('history survives a reload and a killed server; the cut reply is marked interrupted', async ({ page }) => {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'rill-history-'));
  let rill = await startRill(['--data-dir', dataDir, ...KILLABLE]);
  try {
    await page.goto(`${rill.url}/`);
    await waitLive(page);
    await ask(page, 'First question about engines');
    await expect(assistant(page).first()).toHaveAttribute('data-status', 'complete', { timeout: 30_000 });
    const firstReply = (await assistant(page).first().getAttribute('data-raw'))!;
    // The new chat has its own address and a sidebar entry titled by the question.
    await expect(page).toHaveURL(/\/c\/[^/]+$/);
    const url = page.url();
    await expect(page.locator('.conversation.current .conversation-link')).toHaveText('First question about engines');

    await ask(page, 'Second question, cut short');
    const cut = assistant(page).nth(1);
    await expect(cut).toHaveAttribute('data-status', 'streaming');
    await expect(cut.locator('.markdown')).toContainText('You asked');
    await page.waitForTimeout(700); // a few checkpoints
    await rill.stop('SIGKILL');
    rill = await startRill(['--data-dir', dataDir, ...KILLABLE], { port: rill.port });
    await expect(cut).toHaveAttribute('data-status', 'interrupted', { timeout: 40_000 });

    // A reload renders the same conversation from the store, on the server.
    const html = await (await page.request.get(url)).text();
    expect(html).toContain('Second question, cut short');
    await page.reload();
    await waitLive(page);
    await expect(user(page)).toHaveText(['First question about engines', 'Second question, cut short'].map((t) => new RegExp(t)));
    await expect(assistant(page)).toHaveCount(2);
    await expect(assistant(page).first()).toHaveAttribute('data-status', 'complete');
    expect(await assistant(page).first().getAttribute('data-raw')).toBe(firstReply);
    const interrupted = assistant(page).nth(1);
    await expect(interrupted).toHaveAttribute('data-status', 'interrupted');
    await expect(interrupted.locator('.note.interrupted')).toBeVisible();
    await expect(interrupted.locator('.markdown')).toContainText('You asked');
    await expect(page.locator('.conversation')).toHaveCount(1);

    // The interrupted reply can be regenerated.
    await interrupted.locator('button.regenerate').click();
    await expect(assistant(page)).toHaveCount(2);
    await expect(assistant(page).nth(1)).toHaveAttribute('data-status', 'complete', { timeout: 30_000 });
    await page.reload();
    await waitLive(page);
    await expect(assistant(page).nth(1)).toHaveAttribute('data-status', 'complete');
  } finally {
    await rill.stop();
    fs.rmSync(dataDir, { recursive: true, force: true });
  }
});

test('regenerate and edit keep every version behind a switcher; rename and delete', async ({ page }) => {
  await page.goto('/');
  await waitLive(page);
  await ask(page, 'Alpha question');
  await expect(assistant(page).first()).toHaveAttribute('data-status', 'complete', { timeout: 30_000 });
  await expect(page).toHaveURL(/\/c\/[^/]+$/);
  const id = decodeURIComponent(page.url().split('/c/')[1]);
  const stored = async () => (await (await page.request.get(`/api/v1/conversations/${encodeURIComponent(id)}`)).json()).messages;
  const before = await stored();
  expect(before.map((m: any) => m.role)).toEqual(['user', 'assistant']);
  await expect(page.locator('.versions')).toHaveCount(0);

  // Regenerate: a new version in the reply's place, the old one kept.
  await assistant(page).first().locator('button.regenerate').click();
  await expect(assistant(page)).toHaveCount(1);
  await expect(assistant(page).first()).toHaveAttribute('data-status', 'complete', { timeout: 30_000 });
  const replySwitch = assistant(page).first().locator('.versions');
  await expect(replySwitch.locator('.version-label')).toHaveText('2/2');
  await expect.poll(async () => (await stored())[1].id).not.toBe(before[1].id);
  expect((await stored()).length).toBe(2);
  expect((await stored())[1].versions).toEqual([before[1].id, (await stored())[1].id]);
  // ‹ shows the first answer again, and the choice is the server's.
  await replySwitch.locator('.version-prev').click();
  await expect(replySwitch.locator('.version-label')).toHaveText('1/2');
  await expect.poll(async () => (await stored())[1].id).toBe(before[1].id);
  await expect(replySwitch.locator('.version-prev')).toBeDisabled();

  // Edit the question: a new branch; the old one and its follow-up are kept.
  await ask(page, 'A follow-up');
  await expect(assistant(page).nth(1)).toHaveAttribute('data-status', 'complete', { timeout: 30_000 });
  await user(page).first().locator('button.edit').click();
  await user(page).first().locator('.edit-input').fill('Alpha question, edited');
  await user(page).first().locator('button.resend').click();
  await expect(user(page)).toHaveCount(1);
  await expect(user(page).first()).toContainText('Alpha question, edited');
  await expect(assistant(page).first()).toHaveAttribute('data-status', 'complete', { timeout: 30_000 });
  await expect(assistant(page).first()).toHaveAttribute('data-raw', /Alpha question, edited/);
  const questionSwitch = user(page).first().locator('.versions');
  await expect(questionSwitch.locator('.version-label')).toHaveText('2/2');
  await page.reload();
  await waitLive(page);
  await expect(user(page)).toHaveCount(1);
  await expect(user(page).first()).toContainText('Alpha question, edited');
  await expect(questionSwitch.locator('.version-label')).toHaveText('2/2');
  // Back to the first version: its branch returns, follow-up included, and
  // survives a reload.
  await questionSwitch.locator('.version-prev').click();
  await expect(user(page)).toHaveCount(2);
  await expect(user(page).first()).toContainText('Alpha question');
  await expect(user(page).nth(1)).toContainText('A follow-up');
  await expect(questionSwitch.locator('.version-label')).toHaveText('1/2');
  await page.reload();
  await waitLive(page);
  await expect(user(page)).toHaveCount(2);
  await expect(user(page).first().locator('.version-label')).toHaveText('1/2');
  await expect(assistant(page).first().locator('.version-label')).toHaveText('1/2');

  // Rename in the sidebar.
  const entry = page.locator(`.conversation[data-id="${id}"]`);
  await entry.locator('button.rename').click();
  await entry.locator('.rename-input').fill('Renamed chat');
  await entry.locator('.rename-input').press('Enter');
  await expect(entry.locator('.conversation-link')).toHaveText('Renamed chat');
  await page.reload();
  await expect(page.locator(`.conversation[data-id="${id}"] .conversation-link`)).toHaveText('Renamed chat');

  // Delete, with confirmation: gone from the list and from the server.
  page.once('dialog', (dialog) => dialog.accept());
  await page.locator(`.conversation[data-id="${id}"] button.delete`).click();
  await expect(page).toHaveURL(/\/$/);
  await expect(page.locator(`.conversation[data-id="${id}"]`)).toHaveCount(0);
  expect((await page.request.get(`/api/v1/conversations/${encodeURIComponent(id)}`)).status()).toBe(404);
  await page.goto(`/c/${encodeURIComponent(id)}`);
  await expect(page.locator('.notices')).toContainText('does not exist');
});

test('another browser cannot open my conversation', async ({ page, browser }) => {
  await page.goto('/');
  await waitLive(page);
  await ask(page, 'Private matters');
  await expect(assistant(page).first()).toHaveAttribute('data-status', 'complete', { timeout: 30_000 });
  await expect(page).toHaveURL(/\/c\/[^/]+$/);
  const url = page.url();
  const stranger = await browser.newContext();
  const other = await stranger.newPage();
  await other.goto(url);
  await expect(other.locator('.notices')).toContainText('belongs to someone else');
  await expect(other.locator('article.msg')).toHaveCount(0);
  await expect(other.locator('.conversation')).toHaveCount(0);
  await stranger.close();
});

test('a reload mid-reply shows what was saved and follows the reply to its end', async ({ page }) => {
  const question = 'Keep talking while I reload';
  const reference = await page.request.post('/api/v1/chat', { data: { message: question } });
  const expected = (await reference.json()).response;
  await page.goto('/');
  await waitLive(page);
  await ask(page, question);
  const reply = assistant(page).first();
  await expect(reply).toHaveAttribute('data-status', 'streaming');
  await expect(page).toHaveURL(/\/c\/[^/]+$/);
  await page.waitForTimeout(1200); // past a checkpoint, well before the end
  await page.reload();
  // The server renders the saved part, then the page resumes the live stream.
  await expect(assistant(page)).toHaveCount(1);
  await expect(assistant(page).first()).toHaveAttribute('data-status', 'complete', { timeout: 30_000 });
  expect(await assistant(page).first().getAttribute('data-raw')).toBe(expected);
  await expect(user(page)).toHaveCount(1);
});

test('the open conversation downloads as Markdown and JSON', async ({ page }) => {
  await page.goto('/');
  await waitLive(page);
  await ask(page, 'Download this chat');
  await expect(page.locator('article.msg.assistant').last()).toHaveAttribute('data-status', 'complete', { timeout: 30_000 });
  const reply = await page.locator('article.msg.assistant').last().getAttribute('data-raw');
  const [markdown] = await Promise.all([
    page.waitForEvent('download'),
    page.getByRole('link', { name: 'Export .md' }).click(),
  ]);
  expect(markdown.suggestedFilename()).toBe('rill-download-this-chat.md');
  const text = fs.readFileSync((await markdown.path())!, 'utf8');
  expect(text).toContain('# Download this chat');
  expect(text).toContain(reply!.trim());
  const [json] = await Promise.all([
    page.waitForEvent('download'),
    page.getByRole('link', { name: '.json' }).click(),
  ]);
  const detail = JSON.parse(fs.readFileSync((await json.path())!, 'utf8'));
  expect(detail.messages.map((m: any) => m.role)).toEqual(['user', 'assistant']);
  expect(detail.messages[1].content).toBe(reply);
});
