// The views no first page shows (the search, share and shortcuts dialogs, the
// documents panel) are split out of the main wasm and fetched when first
// opened. A chunk that cannot be fetched must not break the page: it says so,
// and trying again once the network is back opens the view.
import { test, expect } from '@playwright/test';
import { ask, waitLive } from './helpers';

test('a dialog whose code cannot be fetched says so, and opens when tried again', async ({ page }) => {
  test.setTimeout(120_000);
  const errors: string[] = [];
  page.on('pageerror', (error) => errors.push(error.message));
  const fetched: string[] = [];
  let offline = true;
  await page.route(/\/pkg\/[^/?]+\.wasm(\?.*)?$/, (route) => {
    const name = new URL(route.request().url()).pathname.split('/').pop()!;
    if (name === 'rill.wasm') return route.continue();
    fetched.push(name);
    return offline ? route.abort('internetdisconnected') : route.continue();
  });
  await page.goto('/');
  await waitLive(page);

  // The first page works without any chunk.
  await ask(page, 'Hello while the dialogs are out of reach');
  await expect(page.locator('article.msg.assistant').last()).toHaveAttribute('data-status', 'complete', { timeout: 30_000 });

  await page.keyboard.press('Control+k');
  const notice = page.locator('.deferred-failed');
  await expect(notice).toBeVisible();
  await expect(notice).toHaveAttribute('role', 'alert');
  await expect(notice).toContainText('could not be loaded');
  expect(fetched.some((name) => name.includes('search_dialog'))).toBe(true);

  // The page still streams after the failed load (the wasm did not abort).
  await page.keyboard.press('Escape');
  await expect(notice).toBeHidden();
  await ask(page, 'Still answering?');
  await expect(page.locator('article.msg.assistant').last()).toHaveAttribute('data-status', 'complete', { timeout: 30_000 });
  // Its notice closes like the view would have.
  await page.getByRole('button', { name: 'Share' }).click();
  await expect(notice).toBeVisible();
  await notice.getByRole('button', { name: 'Close' }).click();
  await expect(notice).toBeHidden();

  // Back online: trying again opens the dialog, and it works.
  await page.keyboard.press('Control+k');
  await expect(notice).toBeVisible();
  offline = false;
  await notice.getByRole('button', { name: 'Try again' }).click();
  const dialog = page.getByRole('dialog', { name: 'Search your conversations' });
  await expect(dialog).toBeVisible();
  await expect(notice).toBeHidden();
  await dialog.getByRole('combobox').fill('dialogs');
  await expect(dialog.locator('.search-hit').first()).toBeVisible({ timeout: 10_000 });
  await page.keyboard.press('Escape');

  // The other deferred views open too (their chunks are reachable now).
  await page.keyboard.press('?');
  await expect(page.getByRole('dialog', { name: 'Keyboard shortcuts' })).toBeVisible();
  await page.keyboard.press('Escape');
  await page.getByRole('button', { name: 'Share' }).click();
  await expect(page.getByRole('dialog', { name: 'Share this conversation' })).toBeVisible();
  // The loader's own rejected fetches surface as 'Failed to fetch'; anything
  // else (a wasm abort is 'RuntimeError: unreachable') is a failure.
  expect(errors.filter((message) => !/^Failed to fetch$/.test(message))).toEqual([]);
});

test('a reply written before the markdown renderer arrives shows as text, then renders', async ({ page }) => {
  const errors: string[] = [];
  page.on('pageerror', (error) => errors.push(error.message));
  let offline = true;
  let asked = 0;
  await page.route(/\/pkg\/[^/?]+\.wasm(\?.*)?$/, (route) => {
    const name = new URL(route.request().url()).pathname.split('/').pop()!;
    if (name === 'rill.wasm') return route.continue();
    if (name.includes('markdown_renderer')) asked++;
    return offline ? route.abort('internetdisconnected') : route.continue();
  });
  await page.goto('/');
  await waitLive(page);
  await ask(page, 'Show me some code');
  const reply = page.locator('article.msg.assistant').last();
  await expect(reply).toHaveAttribute('data-status', 'complete', { timeout: 30_000 });
  // No renderer: the text, escaped, nothing lost.
  await expect(reply.locator('.md-plain')).toContainText('fn main()');
  await expect(reply.locator('.code-block')).toHaveCount(0);
  expect(asked).toBeGreaterThan(0);

  // Back online: the next attempt fetches it and the reply renders in place.
  offline = false;
  const block = reply.locator('.code-block').first();
  await expect(block.locator('.hl-kw').first()).toBeVisible({ timeout: 15_000 });
  await expect(block.locator('.code-lang')).toHaveText('Rust');
  await expect(reply.locator('.md-plain')).toHaveCount(0);

  // New replies render as they stream.
  await ask(page, 'Show me some code');
  await expect(page.locator('article.msg.assistant').last().locator('.code-block .hl-kw').first()).toBeVisible({
    timeout: 30_000,
  });
  expect(errors.filter((message) => !/^Failed to fetch$/.test(message))).toEqual([]);
});
