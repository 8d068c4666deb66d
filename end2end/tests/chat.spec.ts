import { test, expect } from '@playwright/test';
import { ask, captureCompletes, waitLive } from './helpers';

test('a question streams back word by word and ends equal to the server reply', async ({ page }) => {
  const completes = captureCompletes(page);
  await page.goto('/');
  await waitLive(page);
  await ask(page, 'What is the engine power?');

  const reply = page.locator('article.msg.assistant').last();
  await expect(reply).toHaveAttribute('data-status', 'streaming');
  // Observe the reply growing over several looks before it completes.
  const lengths: number[] = [];
  for (let i = 0; i < 40 && (await reply.getAttribute('data-status')) === 'streaming'; i++) {
    lengths.push((await reply.locator('.markdown').innerText()).length);
    await page.waitForTimeout(100);
  }
  const growing = lengths.filter((n, i) => i > 0 && n > lengths[i - 1]);
  expect(growing.length, `lengths seen: ${lengths}`).toBeGreaterThanOrEqual(3);

  await expect(reply).toHaveAttribute('data-status', 'complete');
  expect(completes.length).toBe(1);
  const serverReply: string = completes[0].response;
  await expect(reply).toHaveAttribute('data-raw', serverReply);
  // The rendered text carries the words of the reply (markdown syntax aside).
  const shown = await reply.locator('.markdown').innerText();
  expect(shown).toContain('What is the engine power?');
  expect(shown).toContain('Three things worth keeping in mind');
  // The user's message is shown too, and the composer was cleared.
  await expect(page.locator('article.msg.user .user-text').last()).toHaveText('What is the engine power?');
  await expect(page.locator('#composer-input')).toHaveValue('');
});

test('markdown renders: the code block is code, the list is a list', async ({ page }) => {
  await page.goto('/');
  await waitLive(page);
  await ask(page, 'Show me some code');
  const reply = page.locator('article.msg.assistant').last();
  await expect(reply).toHaveAttribute('data-status', 'complete');
  const code = reply.locator('pre > code.language-rust');
  await expect(code).toHaveCount(1);
  await expect(code).toContainText('fn main()');
  await expect(reply.locator('ul > li')).toHaveCount(3);
  await expect(reply.locator('strong').first()).toHaveText('demo');
});

test('HTML in a reply is shown as text and never executed', async ({ page }) => {
  const dialogs: string[] = [];
  page.on('dialog', async (dialog) => {
    dialogs.push(dialog.message());
    await dialog.dismiss();
  });
  await page.goto('/');
  await waitLive(page);
  const hostile = '<img src=x onerror="window.__pwned=1;alert(1)"> and <script>window.__pwned=2</script>';
  await ask(page, hostile);
  const reply = page.locator('article.msg.assistant').last();
  await expect(reply).toHaveAttribute('data-status', 'complete');
  // The demo quotes the question, so the reply really contains the markup.
  expect(await reply.getAttribute('data-raw')).toContain('<img src=x onerror=');
  await expect(reply.locator('.markdown')).toContainText('<img src=x onerror=');
  await expect(reply.locator('.markdown img')).toHaveCount(0);
  await expect(reply.locator('.markdown script')).toHaveCount(0);
  await page.waitForTimeout(300);
  expect(await page.evaluate(() => (window as any).__pwned)).toBeUndefined();
  expect(dialogs).toEqual([]);
});

test('the composer: disabled while empty, Shift+Enter adds a line, Enter sends', async ({ page }) => {
  await page.goto('/');
  await waitLive(page);
  const input = page.locator('#composer-input');
  const send = page.locator('button.send');
  await expect(send).toBeDisabled();
  await input.fill('   ');
  await expect(send).toBeDisabled();
  await input.fill('first line');
  await expect(send).toBeEnabled();
  await input.press('Shift+Enter');
  await input.pressSequentially('second line');
  await expect(input).toHaveValue('first line\nsecond line');
  await expect(page.locator('article.msg')).toHaveCount(0);
  await input.press('Enter');
  await expect(page.locator('article.msg.user .user-text')).toHaveText('first line\nsecond line');
  await expect(page.locator('article.msg.assistant')).toHaveAttribute('data-status', 'complete');
});

test('stop ends a streaming reply and keeps its text', async ({ page }) => {
  await page.goto('/');
  await waitLive(page);
  await ask(page, 'Tell me a long story');
  const reply = page.locator('article.msg.assistant').last();
  await expect(reply).toHaveAttribute('data-status', 'streaming');
  await expect(reply.locator('.markdown')).toContainText('You asked');
  await reply.locator('button.stop').click();
  await expect(reply).toHaveAttribute('data-status', 'stopped');
  await expect(reply.locator('.note.stopped')).toBeVisible();
  expect((await reply.getAttribute('data-raw'))!.length).toBeGreaterThan(0);
});

test('the page has the accessible live region and the protocol test page works', async ({ page }) => {
  await page.goto('/');
  await expect(page.locator('section.log')).toHaveAttribute('aria-live', 'polite');
  await page.goto('/ws/test');
  await page.locator('#connect').click();
  await expect(page.locator('#status')).toHaveText('connected');
  await page.locator('#send').click();
  await expect(page.locator('#progress')).toContainText('complete · agent assistant', { timeout: 30_000 });
  await expect(page.locator('#reply')).toContainText('What is the engine power?');
});

test('a streaming reply stays in view at the end of the page, and a reader who scrolled up is left there', async ({ page }) => {
  await page.setViewportSize({ width: 480, height: 320 });
  await page.goto('/');
  await waitLive(page);
  const atEnd = () =>
    page.evaluate(() => document.documentElement.scrollHeight - (window.scrollY + window.innerHeight) <= 160);

  await ask(page, 'Follow me to the end');
  const first = page.locator('article.msg.assistant').last();
  await expect(first).toHaveAttribute('data-status', 'streaming');
  await expect(first).toHaveAttribute('data-status', 'complete');
  // The reply is far taller than the window, and the page followed it.
  expect(await page.evaluate(() => document.documentElement.scrollHeight > 3 * window.innerHeight)).toBe(true);
  await expect.poll(atEnd).toBe(true);

  await ask(page, 'And now I read the top');
  const second = page.locator('article.msg.assistant').last();
  await expect(second).toHaveAttribute('data-status', 'streaming');
  await page.evaluate(() => window.scrollTo(0, 0));
  await expect(second).toHaveAttribute('data-status', 'complete');
  await page.waitForTimeout(100);
  expect(await page.evaluate(() => window.scrollY)).toBe(0);
  // Away from the end, a button brings it back.
  const jump = page.getByRole('button', { name: '↓ Jump to latest' });
  await expect(jump).toBeVisible();
  await jump.click();
  await expect.poll(atEnd).toBe(true);
  await expect(jump).toBeHidden();

  // Sending a question brings the end of the page, where its reply is, into view.
  await ask(page, 'Back to the end');
  await expect.poll(atEnd).toBe(true);
});

test('keyboard shortcuts: ? lists them, Esc stops the reply, Up edits the last question, Ctrl+Shift+O starts a new chat', async ({ page }) => {
  await page.goto('/');
  await waitLive(page);
  const dialog = page.getByRole('dialog', { name: 'Keyboard shortcuts' });
  // `?` outside a text box opens the list; Esc closes it.
  await page.locator('.log').click();
  await page.keyboard.press('?');
  await expect(dialog).toBeVisible();
  await expect(dialog).toContainText('Stop the reply being written');
  await page.keyboard.press('Escape');
  await expect(dialog).toHaveCount(0);
  // In the composer `?` is just text.
  const input = page.locator('#composer-input');
  await input.focus();
  await page.keyboard.press('?');
  await expect(input).toHaveValue('?');
  await expect(dialog).toHaveCount(0);
  await input.fill('');

  // Esc stops the reply being written.
  await ask(page, 'Stop me with Escape');
  const reply = page.locator('article.msg.assistant').last();
  await expect(reply).toHaveAttribute('data-status', 'streaming');
  await page.keyboard.press('Escape');
  await expect(reply).toHaveAttribute('data-status', 'stopped');

  // Up in the empty composer opens the last question for editing.
  await input.focus();
  await page.keyboard.press('ArrowUp');
  const editor = page.locator('article.msg.user .edit-input');
  await expect(editor).toBeFocused();
  await expect(editor).toHaveValue('Stop me with Escape');

  // Ctrl+Shift+O: a new chat.
  await expect(page).toHaveURL(/\/c\//);
  await page.keyboard.press('Control+Shift+O');
  await expect(page).toHaveURL(/127\.0\.0\.1:\d+\/$/);
  await waitLive(page);
  await expect(page.locator('article.msg')).toHaveCount(0);
});
