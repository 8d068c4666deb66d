import { expect, Page } from '@playwright/test';

/** Waits until the app has hydrated and its WebSocket is live. */
export async function waitLive(page: Page) {
  await expect(page.locator('.badge')).toHaveText('Live · WebSocket');
  await expect(page.locator('.badge')).toHaveAttribute('data-state', 'live');
}

/** Collects the `complete` frames the page's WebSockets receive. */
export function captureCompletes(page: Page): Array<Record<string, any>> {
  const completes: Array<Record<string, any>> = [];
  page.on('websocket', (ws) => {
    ws.on('framereceived', ({ payload }) => {
      try {
        const frame = JSON.parse(String(payload));
        if (frame.type === 'complete') completes.push(frame);
      } catch {
        // not JSON: ignore
      }
    });
  });
  return completes;
}

/** Types a question into the composer and sends it with Enter. */
export async function ask(page: Page, question: string) {
  const input = page.locator('#composer-input');
  await input.fill(question);
  await input.press('Enter');
}
