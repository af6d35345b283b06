// The inactivity limit in the browser, against a server whose limit is six seconds: the app's
// use keeps the session, the app makes no request of its own to keep it (no token refresh, no
// timer), and once the customer stops, the bank ends the session and the app says why, without
// a reload and without the customer doing anything. Run by scripts/web-test.sh.

import assert from 'node:assert/strict';
import { after, afterEach, before, test } from 'node:test';
import * as H from './harness.mjs';

const IDLE_S = 6;

/** @type {Awaited<ReturnType<typeof H.startServer>>} */ let server;
/** @type {import('playwright-core').Browser} */ let browser;
/** @type {import('playwright-core').Page} */ let page;
/** Every request the page makes, with when. */
const requests = /** @type {{ at: number, method: string, url: string, background: boolean, authorization: string, dpop: string }[]} */ ([]);

before(async () => {
  server = await H.startServer({ env: { BP_AUTH__IDLE_TIMEOUT_S: String(IDLE_S) } });
  browser = await H.launchBrowser();
  const context = await browser.newContext({ locale: 'en-GB', viewport: { width: 1280, height: 860 } });
  page = await context.newPage();
  page.on('request', (r) => {
    const headers = r.headers();
    requests.push({
      at: Date.now(),
      method: r.method(),
      url: r.url(),
      background: headers['bp-activity'] === 'background',
      authorization: headers.authorization ?? '',
      dpop: headers.dpop ?? '',
    });
  });
});

after(async () => {
  await browser?.close();
  await server?.cleanup();
});

afterEach(async (t) => {
  if (/** @type {any} */ (t).passed === false) {
    console.error(server.logs(60).join('\n'));
    if (page) await H.snapshot(page, `idle-failed-${t.name}`);
  }
});

const sleep = (/** @type {number} */ ms) => new Promise((resolve) => setTimeout(resolve, ms));

test('use keeps the session; idleness ends it and the page says why', async () => {
  const { password, totpSecret } = H.credentials(server.dataDir, 'bob');
  await page.goto(`${server.base}/`);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.locator('#username').fill('bob');
  await page.locator('#password').fill(password);
  await page.getByRole('button', { name: 'Continue' }).click();
  await page.locator('#code').fill(await H.freshTotp(totpSecret));
  await page.locator('#code').press('Enter');
  await page.getByRole('heading', { name: /Hello, / }).waitFor();
  await page.locator('#live[data-state="live"]').waitFor({ timeout: 15_000 });

  // Twice the limit, with a request of the customer's every two seconds: still signed in.
  const nav = page.getByRole('navigation', { name: 'Main' });
  const started = Date.now();
  for (let i = 0; Date.now() - started < 2 * IDLE_S * 1000; i++) {
    await nav.getByRole('link', { name: i % 2 ? 'Transactions' : 'Services' }).click();
    await page.getByRole('heading', { name: i % 2 ? /Transactions — / : 'Services' }).waitFor();
    await sleep(2000);
  }
  assert.equal(await page.locator('#nav').isHidden(), false, 'still signed in after twice the limit of use');
  await page.locator('#live[data-state="live"]').waitFor();

  // Then nothing: the bank ends the session after the limit, and the page says so by itself.
  const quiet = Date.now();
  const lastUse = requests.filter((r) => r.url.includes('/v1/') && !r.background).at(-1)?.at ?? quiet;
  await page.getByText('You were signed out because you were inactive for a while.').waitFor({ timeout: (IDLE_S + 10) * 1000 });
  const after = Date.now() - lastUse;
  console.log(`signed out ${after} ms after the customer's last request`);
  assert.ok(after >= (IDLE_S - 1) * 1000, `not before the limit (${after} ms)`);
  assert.equal(await page.locator('#nav').isHidden(), true);
  await H.snapshot(page, 'signed-out-inactive');

  // While idle the page asked nothing of its own to stay signed in: no refresh, no API call.
  const meanwhile = requests.filter((r) => r.at > quiet && r.url.startsWith(server.base) && !r.url.includes('/app/'));
  assert.deepEqual(
    meanwhile.filter((r) => r.url.endsWith('/oauth2/token') || (r.url.includes('/v1/') && !r.background)),
    [],
    'no token refresh or customer request while idle',
  );
  // The bank revoked the session: the page's last token is refused (here with a proof of
  // another key: the page has forgotten its own).
  const last = requests.filter((r) => r.authorization.startsWith('DPoP ')).at(-1);
  assert.ok(last, 'the page used DPoP');
  const token = last.authorization.slice('DPoP '.length);
  const url = `${server.base}/v1/accounts`;
  const res = await fetch(url, { headers: { authorization: `DPoP ${token}`, dpop: H.dpopProof(H.dpopKey(), 'GET', url, token) } });
  assert.equal(res.status, 401);
  assert.ok(server.logs(200).some((l) => l.includes('"audit":"SessionRevoked"')), 'the end is audited');
});
