/**
 * The demo page in real Chromium (Debian's /usr/bin/chromium, or CHROMIUM), driven by
 * playwright-core, against the real `switchyard` binary serving the committed demo bundle in
 * development mode. Two browser contexts are two users in one room: chat both ways (HTML shown
 * as text), presence, typing, cursors, and the connection indicator across a node restart.
 * Screenshots of both pages go to test-results/.
 */
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core';
import { afterAll, beforeAll, expect, it, onTestFailed } from 'vitest';
import { uniq } from '../support/clients.js';
import { resultsDir, SwitchyardNode } from '../support/processes.js';

const TIMEOUT = 20_000;
let node: SwitchyardNode | undefined;
let browser: Browser | undefined;
const contexts: BrowserContext[] = [];

beforeAll(async () => {
  mkdirSync(resultsDir, { recursive: true });
  node = await SwitchyardNode.start({ label: 'e2e-demo', env: { SWITCHYARD_DRAIN_MS: '300' } });
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
});

afterAll(async () => {
  for (const c of contexts.splice(0)) await c.close().catch(() => undefined);
  await browser?.close();
  await node?.stop();
});

interface User {
  name: string;
  page: Page;
  userId: string;
  /** Messages of `alert`/`confirm`/`prompt` dialogs the page opened. */
  dialogs: string[];
  /** Uncaught errors in the page. */
  errors: string[];
}

async function openDemo(name: string, room: string): Promise<User> {
  const context = await browser!.newContext({ viewport: { width: 1200, height: 1100 } });
  contexts.push(context);
  const page = await context.newPage();
  page.setDefaultTimeout(TIMEOUT);
  const dialogs: string[] = [];
  const errors: string[] = [];
  page.on('dialog', (dialog) => {
    dialogs.push(`${dialog.type()}: ${dialog.message()}`);
    void dialog.dismiss().catch(() => undefined);
  });
  page.on('pageerror', (error) => errors.push(error.message));
  await page.goto(`${node!.httpUrl}/?name=${encodeURIComponent(name)}&room=${encodeURIComponent(room)}`);
  await page.locator('#status[data-state="connected"]').waitFor();
  const userId = await page.evaluate(() => (window as unknown as { __switchyard: { userId: string } }).__switchyard.userId);
  expect(userId).toMatch(/^u-/);
  return { name, page, userId, dialogs, errors };
}

const byTestId = (page: Page, id: string) => page.locator(`[data-testid="${id}"]`);

/** The text of `from`'s messages as `viewer` sees them. */
const messagesFrom = (viewer: User, from: User) =>
  viewer.page.locator(`[data-testid="message"][data-user-id="${from.userId}"] [data-testid="message-text"]`);

async function screenshot(user: User, suffix: string): Promise<void> {
  await user.page.evaluate(() => window.scrollTo(0, 0)); // the header is sticky
  await user.page.screenshot({ path: join(resultsDir, `e2e-${user.name.toLowerCase()}${suffix}.png`), fullPage: true });
}

async function send(user: User, text: string): Promise<void> {
  const input = byTestId(user.page, 'composer-input');
  await input.fill(text);
  await input.press('Enter');
  await expect.poll(() => input.inputValue(), { timeout: TIMEOUT }).toBe('');
}

it('two users chat, see each other, type, move cursors, and ride out a node restart', async () => {
  const room = uniq('e2e');
  const alice = await openDemo('Alice', room);
  const bob = await openDemo('Bob', room);
  onTestFailed(async () => {
    for (const u of [alice, bob]) await screenshot(u, '-failed').catch(() => undefined);
  });

  // Presence: each lists both, by name.
  for (const viewer of [alice, bob]) {
    for (const member of [alice, bob]) {
      await expect.poll(() => viewer.page.locator(`[data-testid="member"][data-user-id="${member.userId}"]`).textContent(), { timeout: TIMEOUT }).toContain(member.name);
    }
    await expect.poll(() => byTestId(viewer.page, 'member-count').textContent(), { timeout: TIMEOUT }).toBe('2');
  }

  // Typing in one shows "Alice is typing…" in the other.
  await byTestId(alice.page, 'composer-input').pressSequentially('Hello Bob', { delay: 15 });
  await expect.poll(() => byTestId(bob.page, 'typing').textContent(), { timeout: TIMEOUT }).toContain('Alice is typing');
  await byTestId(alice.page, 'composer-input').press('Enter');

  // Chat both ways.
  await expect.poll(() => messagesFrom(bob, alice).allTextContents(), { timeout: TIMEOUT }).toEqual(['Hello Bob']);
  await expect.poll(() => byTestId(bob.page, 'typing').textContent(), { timeout: TIMEOUT }).toBe(''); // the message ends the typing
  await expect
    .poll(() => alice.page.locator(`[data-testid="message"][data-user-id="${alice.userId}"]`).first().getAttribute('data-status'), { timeout: TIMEOUT })
    .toBe('sent');
  await send(bob, 'Hi Alice!');
  await expect.poll(() => messagesFrom(alice, bob).allTextContents(), { timeout: TIMEOUT }).toEqual(['Hi Alice!']);

  // HTML in a message is text: no element is made, no script runs, no dialog opens.
  const html = '<img src=x onerror=alert(1)>';
  await send(alice, html);
  await expect.poll(() => messagesFrom(bob, alice).allTextContents(), { timeout: TIMEOUT }).toEqual(['Hello Bob', html]);
  await expect.poll(() => messagesFrom(alice, alice).allTextContents(), { timeout: TIMEOUT }).toEqual(['Hello Bob', html]);
  for (const u of [alice, bob]) {
    expect(await u.page.locator('#messages img').count()).toBe(0);
    expect(await messagesFrom(u, alice).last().innerHTML()).toBe('&lt;img src=x onerror=alert(1)&gt;');
  }

  // Moving the mouse in Alice's cursor area shows her named cursor at Bob's.
  const area = byTestId(alice.page, 'cursor-area');
  await area.scrollIntoViewIfNeeded();
  const box = (await area.boundingBox())!;
  expect(box.width).toBeGreaterThan(0);
  await alice.page.mouse.move(box.x + box.width * 0.1, box.y + box.height * 0.1);
  await alice.page.mouse.move(box.x + box.width * 0.3, box.y + box.height * 0.6, { steps: 10 });
  const aliceCursor = bob.page.locator(`[data-testid="cursor"][data-user-id="${alice.userId}"]`);
  await expect.poll(() => aliceCursor.textContent(), { timeout: TIMEOUT }).toContain('Alice');
  await expect.poll(async () => parseFloat((await aliceCursor.evaluate((el) => (el as HTMLElement).style.left)) || 'NaN'), { timeout: TIMEOUT }).toBeCloseTo(30, 0);
  await expect.poll(async () => parseFloat((await aliceCursor.evaluate((el) => (el as HTMLElement).style.top)) || 'NaN'), { timeout: TIMEOUT }).toBeCloseTo(60, 0);
  await screenshot(alice, '');
  await screenshot(bob, '');

  // The node stops: both indicators leave "connected"; the offline banner shows.
  await node!.stop();
  for (const u of [alice, bob]) {
    await u.page.locator('#status[data-state="reconnecting"], #status[data-state="connecting"]').waitFor();
    await byTestId(u.page, 'offline-banner').waitFor();
  }
  await screenshot(alice, '-offline');

  // It comes back on the same port: both reconnect by themselves (with a fresh dev token, as the
  // restarted node has a new signing key), rejoin and chat again.
  await node!.start();
  for (const u of [alice, bob]) {
    await u.page.locator('#status[data-state="connected"]').waitFor({ timeout: 45_000 });
    await byTestId(u.page, 'offline-banner').waitFor({ state: 'detached' });
    await expect.poll(() => byTestId(u.page, 'member-count').textContent(), { timeout: TIMEOUT }).toBe('2');
  }
  await send(bob, 'back again');
  await expect.poll(async () => (await messagesFrom(alice, bob).allTextContents()).includes('back again'), { timeout: TIMEOUT }).toBe(true);
  await screenshot(alice, '-reconnected');
  await screenshot(bob, '-reconnected');

  for (const u of [alice, bob]) {
    expect(u.dialogs).toEqual([]);
    expect(u.errors).toEqual([]);
  }
});
