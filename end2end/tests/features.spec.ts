// Finding and sharing: search across conversations (Ctrl/Cmd+K) that opens the
// message it found, and a public read-only link that a stranger can open and
// that stops working when revoked.
import { test, expect } from '@playwright/test';
import { ask, waitLive } from './helpers';

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

  // Nothing found says so; Esc closes without stopping anything.
  await page.keyboard.press('Control+k');
  await page.getByRole('combobox').fill('zzzqqqxxyy');
  await expect(page.getByRole('dialog').getByRole('status')).toHaveText('No messages match.');
  await page.keyboard.press('Escape');
  await expect(page.getByRole('dialog')).toBeHidden();
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
