// Personas in the browser: three answering one question side by side, one of
// them stopped, all three found again after a reload; Auto naming who answered
// and how sure it was; and seed 000's plain chat page.
import { test, expect, Page } from '@playwright/test';
import { ask, waitLive } from './helpers';

const picker = (page: Page) => page.getByRole('group', { name: 'Who answers' });
const chip = (page: Page, name: string) => picker(page).getByRole('button', { name, exact: true });

test('three personas answer side by side; one is stopped; all survive a reload', async ({ page }) => {
  await page.goto('/');
  await waitLive(page);
  await chip(page, 'Tech Enthusiast').click();
  await chip(page, 'Creative Writer').click();
  await chip(page, 'Data Scientist').click();
  await chip(page, 'Assistant').click();
  for (const name of ['Tech Enthusiast', 'Creative Writer', 'Data Scientist']) {
    await expect(chip(page, name)).toHaveAttribute('aria-pressed', 'true');
  }
  await expect(chip(page, 'Assistant')).toHaveAttribute('aria-pressed', 'false');

  await ask(page, 'What do you think about AI?');
  const group = page.locator('.turn-group');
  const replies = group.locator('article.msg.assistant');
  await expect(replies).toHaveCount(3);
  for (let i = 0; i < 3; i++) await expect(replies.nth(i)).toHaveAttribute('data-status', 'streaming');
  // Side by side: one row, three columns, left to right in the order asked.
  const boxes = await Promise.all([0, 1, 2].map((i) => replies.nth(i).boundingBox()));
  expect(Math.abs(boxes[0]!.y - boxes[2]!.y)).toBeLessThan(2);
  expect(boxes[0]!.x).toBeLessThan(boxes[1]!.x);
  expect(boxes[1]!.x).toBeLessThan(boxes[2]!.x);
  await expect(replies.locator('.persona-name')).toHaveText(['Tech Enthusiast', 'Creative Writer', 'Data Scientist']);

  // Stop the middle one; the others go on to the end.
  await replies.nth(1).locator('button.stop').click();
  await expect(replies.nth(1)).toHaveAttribute('data-status', 'stopped');
  await expect(replies.nth(0)).toHaveAttribute('data-status', 'complete', { timeout: 30_000 });
  await expect(replies.nth(2)).toHaveAttribute('data-status', 'complete', { timeout: 30_000 });
  const texts = await Promise.all([0, 1, 2].map((i) => replies.nth(i).getAttribute('data-raw')));
  expect(texts[0]).toContain('Three things I would try right away');
  expect(texts[2]).toContain('Three measurements worth taking');
  expect(texts[1]!.length).toBeLessThan(texts[0]!.length);

  // A reload renders the same turn from the store, side by side.
  await page.reload();
  await waitLive(page);
  const again = page.locator('.turn-group article.msg.assistant');
  await expect(again).toHaveCount(3);
  await expect(again.nth(0)).toHaveAttribute('data-status', 'complete');
  await expect(again.nth(1)).toHaveAttribute('data-status', 'stopped');
  await expect(again.nth(2)).toHaveAttribute('data-status', 'complete');
  await expect(again.locator('.persona-name')).toHaveText(['Tech Enthusiast', 'Creative Writer', 'Data Scientist']);
  for (let i = 0; i < 3; i++) expect(await again.nth(i).getAttribute('data-raw')).toBe(texts[i]);
});

test('Auto names the persona that answered and how sure it was, also after a reload', async ({ page }) => {
  await page.goto('/');
  await waitLive(page);
  await chip(page, 'Auto').click();
  await expect(chip(page, 'Auto')).toHaveAttribute('aria-pressed', 'true');
  await expect(chip(page, 'Assistant')).toHaveAttribute('aria-pressed', 'false');
  await ask(page, 'Write me a poem and a short story about the sea');
  const reply = page.locator('article.msg.assistant').last();
  await expect(reply).toHaveAttribute('data-status', 'complete', { timeout: 30_000 });
  await expect(reply).toHaveAttribute('data-persona', 'creative_writer');
  const label = reply.locator('.persona-name');
  await expect(label).toHaveText(/^Creative Writer · auto, \d+% sure$/);
  const shown = await label.textContent();
  await page.reload();
  await waitLive(page);
  await expect(page.locator('article.msg.assistant').last().locator('.persona-name')).toHaveText(shown!);
});

test("seed 000's plain chat page streams a reply as text", async ({ page }) => {
  await page.goto('/chat');
  await expect(page.locator('#status')).toHaveText('Connected');
  const hostile = '<img src=x onerror="window.pwned=1"> What is streaming?';
  await page.locator('#question').fill(hostile);
  await page.locator('#question').press('Enter');
  await expect(page.locator('#chat .user')).toHaveText(`You: ${hostile}`);
  const answer = page.locator('#chat .assistant');
  await expect(answer).toHaveCount(1);
  await expect(answer).not.toHaveClass(/streaming/, { timeout: 30_000 });
  await expect(answer).toContainText('What is streaming?');
  expect(await page.locator('#chat img').count()).toBe(0);
  expect(await page.evaluate(() => (window as any).pwned)).toBeUndefined();
});

test("seed 000's broadcast page: what one tab sends, every tab shows", async ({ browser }) => {
  const context = await browser.newContext();
  const tabs = await Promise.all([0, 1, 2].map(() => context.newPage()));
  for (const tab of tabs) {
    await tab.goto('/broadcast');
    await expect(tab.locator('#messages')).toContainText('Connected to server');
  }
  await tabs[1].locator('#messageInput').fill('hello <b>tabs</b>');
  await tabs[1].locator('#messageInput').press('Enter');
  for (const tab of tabs) {
    await expect(tab.locator('#messages .received').last()).toHaveText('Server: Someone said: hello <b>tabs</b>');
    expect(await tab.locator('#messages b').count()).toBe(0);
  }
  await expect(tabs[1].locator('#messages .sent')).toHaveText('You: hello <b>tabs</b>');
  await context.close();
});
