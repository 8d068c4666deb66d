// Documents in the browser: a project chosen in the top bar, a handbook
// uploaded with the panel's button and another dropped on it, each watched
// to "Indexed" through its progress bar, a question answered with the cited
// passage as a source chip (kept after a reload), a bad file refused with
// the reason, and a deleted document gone from answers. Axe checks the panel.
import { test, expect, Page } from '@playwright/test';
import AxeBuilder from '@axe-core/playwright';
import { ask, waitLive } from './helpers';

/** A handbook of about `sections` × 700 characters with one telling sentence. */
function handbook(sections: number): string {
  const filler = (topic: string) =>
    `This part explains how ${topic} works at Acme in everyday practice. `.repeat(10);
  let text = '# Acme Handbook\n\n';
  for (let s = 1; s <= sections; s++) {
    text += `## Section ${s}\n\n${filler(`topic ${s}`)}\n\n`;
    if (s === Math.floor(sections / 2)) {
      text += '## Expenses\n\nExpense refunds are paid within 14 days of a complete claim.\n\n';
    }
  }
  return text;
}

/** Records every value a document's progress bar shows. */
async function recordProgress(page: Page) {
  await page.evaluate(() => {
    const seen: number[] = [];
    (window as any).__progress = seen;
    new MutationObserver(() => {
      document.querySelectorAll('.document progress').forEach((bar) => seen.push((bar as HTMLProgressElement).value));
    }).observe(document.body, { subtree: true, childList: true, attributes: true });
  });
}

async function newProject(page: Page, name: string) {
  page.once('dialog', (dialog) => dialog.accept(name));
  await page.getByLabel('Project', { exact: true }).selectOption({ label: 'New project…' });
  await expect(page.getByRole('region', { name: `Documents of project ${name}` })).toBeVisible();
}

test('a handbook uploaded to a project is indexed with progress, answers with its cited passage, and goes when deleted', async ({ page }) => {
  await page.goto('/');
  await waitLive(page);
  await newProject(page, 'handbook-e2e');
  const panel = page.locator('#documents');
  await recordProgress(page);

  // Upload with the button (a large file, so its processing can be watched).
  const upload = page.waitForResponse((r) => r.url().includes('/documents') && r.request().method() === 'POST');
  await page.locator('.upload-input').setInputFiles({
    name: 'handbook.md',
    mimeType: 'text/markdown',
    buffer: Buffer.from(handbook(1500)),
  });
  expect((await upload).status()).toBe(202);
  const row = panel.locator('li.document', { hasText: 'handbook.md' });
  await expect(row).toHaveAttribute('data-status', 'completed', { timeout: 60_000 });
  await expect(row.locator('.document-status')).toHaveText(/^Indexed · \d+ passages$/);
  const seen: number[] = await page.evaluate(() => (window as any).__progress);
  expect(seen.length, 'the progress bar was shown').toBeGreaterThan(0);
  expect(Math.max(...seen)).toBeLessThanOrEqual(100);

  // Another one dropped on the panel.
  const dropped = await page.evaluateHandle(() => {
    const transfer = new DataTransfer();
    transfer.items.add(new File(['# Boiler\n\nThe boiler is serviced every March by Hotwater Ltd.'], 'boiler.md', { type: 'text/markdown' }));
    return transfer;
  });
  await panel.dispatchEvent('drop', { dataTransfer: dropped });
  await expect(panel.locator('li.document', { hasText: 'boiler.md' })).toHaveAttribute('data-status', 'completed', { timeout: 30_000 });
  await expect(page.getByRole('button', { name: /^Documents \(2\)$/ })).toBeVisible();

  // A file rill cannot read is refused, with the reason.
  await page.locator('.upload-input').setInputFiles({ name: 'photo.png', mimeType: 'image/png', buffer: Buffer.from([0x89, 0x50, 0x4e, 0x47]) });
  await expect(page.locator('.notices')).toContainText('photo.png was not added');
  await expect(page.locator('.notices')).toContainText('UNSUPPORTED_DOCUMENT');

  // The question is answered from the handbook, its passage a source chip.
  await ask(page, 'How fast are expense refunds paid?');
  const reply = page.locator('article.msg.assistant').last();
  await expect(reply).toHaveAttribute('data-status', 'complete', { timeout: 30_000 });
  await expect(reply.locator('.markdown')).toContainText('According to handbook.md [1]: "Expense refunds are paid within 14 days');
  const chip = reply.locator('details.source').first();
  await expect(chip.locator('summary')).toHaveText('[1] handbook.md');
  await expect(chip.locator('.source-text')).toBeHidden();
  await chip.locator('summary').click();
  await expect(chip.locator('.source-text')).toContainText('within 14 days of a complete claim');

  expect(
    (await new AxeBuilder({ page }).include('#documents').include('.sources').analyze()).violations.filter(
      (v) => v.impact === 'serious' || v.impact === 'critical',
    ),
  ).toEqual([]);

  // After a reload: the same project, the same sources.
  await page.reload();
  await waitLive(page);
  await expect(page.getByLabel('Project', { exact: true })).toHaveValue('handbook-e2e');
  await expect(page.locator('article.msg.assistant').last().locator('details.source summary').first()).toHaveText('[1] handbook.md');

  // Deleted (after a confirmation): gone from the list and from answers.
  await page.getByRole('button', { name: /^Documents/ }).click();
  await expect(panel.locator('li.document')).toHaveCount(2);
  page.once('dialog', (dialog) => dialog.accept());
  await panel.getByRole('button', { name: 'Delete handbook.md' }).click();
  await expect(panel.locator('li.document', { hasText: 'handbook.md' })).toHaveCount(0);
  await ask(page, 'How fast are expense refunds paid?');
  const after = page.locator('article.msg.assistant').last();
  await expect(after).toHaveAttribute('data-status', 'complete', { timeout: 30_000 });
  await expect(after.locator('.markdown')).not.toContainText('According to handbook.md');
  await expect(after.locator('details.source summary', { hasText: 'handbook.md' })).toHaveCount(0);

  // Without a project, no retrieval.
  await page.getByLabel('Project', { exact: true }).selectOption({ label: 'No project' });
  await expect(page.locator('#documents')).toBeHidden();
  await ask(page, 'When is the boiler serviced?');
  const plain = page.locator('article.msg.assistant').last();
  await expect(plain).toHaveAttribute('data-status', 'complete', { timeout: 30_000 });
  await expect(plain.locator('details.source')).toHaveCount(0);
});
