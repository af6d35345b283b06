// The web app end to end, in headless Chromium against the real server binary (SQLite, demo
// data): sign-in with password and TOTP through the bank's login pages, the overview against the
// API, history filters, pending payments, live updates without reload, the stream broken by a
// server restart and caught up, errors shown with their problem type, phone width, keyboard
// use, sign-out. Run by scripts/web-test.sh (which sets BP_SERVER_BIN and BP_E2E_OUT); the
// screenshots it saves are the ones in docs/.

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { after, afterEach, before, test } from 'node:test';
import * as H from './harness.mjs';

/** axe-core, the accessibility rules engine, run inside the page (WCAG 2.1 A and AA rules). */
const AXE = readFileSync(createRequire(import.meta.url).resolve('axe-core/axe.min.js'), 'utf8');

/**
 * The WCAG 2.1 A/AA violations axe finds on the page as it is (contrast, labels, names, roles…),
 * as readable lines.
 * @param {import('playwright-core').Page} p
 */
async function accessibilityViolations(p) {
  // Evaluated through the DevTools protocol, which the page's CSP does not govern.
  await p.evaluate(AXE);
  /** @type {{ id: string, help: string, nodes: { target: string[] }[] }[]} */
  const violations = await p.evaluate(async () => {
    const result = await /** @type {any} */ (window).axe.run(document, {
      runOnly: { type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa'] },
    });
    return result.violations.map((/** @type {any} */ v) => ({ id: v.id, help: v.help, nodes: v.nodes.map((/** @type {any} */ n) => ({ target: n.target })) }));
  });
  return violations.map((v) => `${v.id}: ${v.help} (${v.nodes.map((n) => n.target.join(' ')).join(', ')})`);
}

/** @type {Awaited<ReturnType<typeof H.startServer>>} */ let server;
/** @type {import('playwright-core').Browser} */ let browser;
/** @type {import('playwright-core').Page} */ let page;
/** @type {string} */ let ada;
/** @type {string} */ let bob;
/** @type {any[]} */ let adaAccounts;
/** @type {any} */ let adaEur;
/** @type {any} */ let bobEur;
/** The page's API requests' credentials, as the browser sent them. */
const pageRequests = /** @type {{ method: string, url: string, authorization: string, dpop: string }[]} */ ([]);
/** Messages the browser logged as errors (CSP violations among them). */
const consoleErrors = /** @type {string[]} */ ([]);

const LOCALE = 'en-GB';
const ACCESS_TTL_S = 70;
/** The test's own API sessions (not the browser's), refreshed before their short tokens expire. */
/** @type {any} */ let adaSession;
/** @type {any} */ let bobSession;

/** Refreshes the test's own API tokens (the browser refreshes its own). */
async function renewApiTokens() {
  for (const name of ['ada', 'bob']) {
    const session = name === 'ada' ? adaSession : bobSession;
    const next = await H.refreshTokens(server.base, session).catch(() => null);
    if (!next) continue;
    if (name === 'ada') [adaSession, ada] = [next, next.access_token];
    else [bobSession, bob] = [next, next.access_token];
  }
}
/** @param {{ amount: string, currency: string }} m */
const money = (m) => new Intl.NumberFormat(LOCALE, { style: 'currency', currency: m.currency }).format(/** @type {any} */ (m.amount));

before(async () => {
  server = await H.startServer({
    env: {
      // More low-value payments than the default five without SCA: the test makes about ten.
      BP_SCA__LOW_VALUE_COUNT_MAX: '50',
      BP_SCA__LOW_VALUE_TOTAL_MAX_UNITS: '1000',
      // Access tokens of 70 s, so that the app's silent refresh (a request of the customer's
      // within a minute of expiry) happens every 10 s of use during the test.
      BP_AUTH__ACCESS_TOKEN_TTL_S: String(ACCESS_TTL_S),
      // DPoP proofs must carry the server's nonce: the app fetches and renews it as it goes.
      BP_AUTH__DPOP_NONCE: 'true',
    },
  });
  adaSession = await H.apiLogin(server.base, server.dataDir, 'ada');
  bobSession = await H.apiLogin(server.base, server.dataDir, 'bob');
  ada = adaSession.access_token;
  bob = bobSession.access_token;
  setInterval(() => void renewApiTokens(), 20_000).unref();
  adaAccounts = (await H.api(server.base, ada, 'GET', '/v1/accounts')).json.accounts;
  adaEur = adaAccounts.find((a) => a.currency === 'EUR');
  bobEur = (await H.api(server.base, bob, 'GET', '/v1/accounts')).json.accounts.find((/** @type {any} */ a) => a.currency === 'EUR');
  // A history to look at: money in from bob, money out to bob.
  for (const [amount, reference] of [['12.50', 'Lunch, split'], ['7.25', 'Second-hand books'], ['28.00', 'Concert tickets']]) {
    const paid = await H.payment(server.base, bob, { fromAccount: bobEur.id, toAccountNumber: adaEur.number, amount, reference });
    assert.equal(paid.status, 201, paid.text);
  }
  for (const [amount, reference] of [['4.80', 'Coffee beans'], ['19.99', 'Bike repair']]) {
    const paid = await H.payment(server.base, ada, { fromAccount: adaEur.id, toAccountNumber: bobEur.number, amount, reference });
    assert.equal(paid.status, 201, paid.text);
  }
  browser = await H.launchBrowser();
  const context = await browser.newContext({ locale: LOCALE, timezoneId: 'Europe/London', viewport: { width: 1280, height: 860 } });
  page = await context.newPage();
  page.on('console', (m) => {
    if (m.type() === 'error') consoleErrors.push(m.text());
  });
  page.on('pageerror', (e) => consoleErrors.push(e.message));
  page.on('request', (r) => {
    const authorization = r.headers().authorization ?? '';
    if (authorization) pageRequests.push({ method: r.method(), url: r.url(), authorization, dpop: r.headers().dpop ?? '' });
  });
});

after(async () => {
  await browser?.close();
  await server?.cleanup();
});

afterEach(async (t) => {
  if (/** @type {any} */ (t).passed === false) {
    console.error(server.logs(60).join('\n'));
    if (page) await H.snapshot(page, `failed-${t.name}`);
  }
});

/** The API's current view of an account of ada's. @param {string} id */
async function adaAccount(id) {
  const res = await H.api(server.base, ada, 'GET', `/v1/accounts/${id}`);
  assert.equal(res.status, 200);
  return res.json;
}

/** @param {string} state */
async function liveIs(state, timeout = 15_000) {
  await page.locator(`#live[data-state="${state}"]`).waitFor({ timeout });
}

test('signs in through the login pages with password and TOTP; tokens stay in memory', async () => {
  const { password, totpSecret } = H.credentials(server.dataDir, 'ada');
  await page.goto(`${server.base}/`);
  await page.getByRole('button', { name: 'Sign in' }).waitFor();
  assert.deepEqual(await accessibilityViolations(page), [], 'the sign-in page');
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.locator('#username').fill('ada');
  await page.locator('#password').fill(password);
  await page.getByRole('button', { name: 'Continue' }).click();
  await page.locator('#code').fill(await H.freshTotp(totpSecret));
  await page.locator('#code').press('Enter');
  await page.getByRole('heading', { name: 'Hello, Ada Lovelace' }).waitFor();
  assert.equal(new URL(page.url()).pathname, '/', 'the code left the address bar');
  assert.equal(new URL(page.url()).search, '');
  await liveIs('live');
  const storage = await page.evaluate(() => ({ local: localStorage.length, session: sessionStorage.length }));
  assert.deepEqual(storage, { local: 0, session: 0 }, 'nothing is kept in web storage');
  const text = await page.locator('body').innerText();
  assert.ok(text.includes('ada'), 'the username is shown');
  assert.ok(!text.includes(password), 'never a password');
});

test('the page’s tokens are bound to its key: a token taken from it alone is refused', async () => {
  const sent = pageRequests.filter((r) => r.url.includes('/v1/'));
  assert.ok(sent.length > 0, 'the page called the API');
  for (const r of sent) {
    assert.match(r.authorization, /^DPoP /, `the DPoP scheme: ${r.url}`);
    const proof = JSON.parse(Buffer.from(r.dpop.split('.')[1], 'base64url').toString());
    assert.equal(proof.htu, new URL(r.url).origin + new URL(r.url).pathname, 'the proof names the request');
    assert.ok(proof.nonce, 'with the server’s nonce');
  }
  const stolen = sent[sent.length - 1].authorization.slice('DPoP '.length);
  const url = `${server.base}/v1/accounts`;
  const tryWith = async (/** @type {Record<string, string>} */ headers) => {
    const res = await fetch(url, { headers });
    return { status: res.status, type: (await res.json()).type };
  };
  assert.deepEqual(await tryWith({ authorization: `DPoP ${stolen}` }), { status: 401, type: 'urn:bp:problem:invalid-dpop-proof' }, 'without a proof');
  assert.deepEqual(await tryWith({ authorization: `Bearer ${stolen}` }), { status: 401, type: 'urn:bp:problem:unauthorized' }, 'as a bearer token');
  const thief = H.dpopKey();
  thief.nonce = JSON.parse(Buffer.from(sent[sent.length - 1].dpop.split('.')[1], 'base64url').toString()).nonce;
  const forged = H.dpopProof(thief, 'GET', url, stolen);
  assert.deepEqual(await tryWith({ authorization: `DPoP ${stolen}`, dpop: forged }), { status: 401, type: 'urn:bp:problem:invalid-dpop-proof' }, 'with a proof of another key');
  // A request the page sent, replayed as it was (token and proof), is refused.
  const replayed = sent[sent.length - 1];
  const again = await fetch(replayed.url, { method: replayed.method, headers: { authorization: replayed.authorization, dpop: replayed.dpop } });
  assert.equal(again.status, 401, 'a proof is accepted once');
});

test('the overview shows every account with the API’s balances', async () => {
  const cards = page.locator('li.account');
  assert.equal(await cards.count(), adaAccounts.length);
  for (const a of adaAccounts) {
    const now = await adaAccount(a.id);
    const card = page.locator(`li.account[data-account="${a.id}"]`);
    assert.equal(await card.locator('[data-balance="posted"]').innerText(), money(now.balances.posted));
    assert.equal(await card.locator('[data-balance="available"]').innerText(), money(now.balances.available));
    assert.ok((await card.innerText()).includes(a.currency));
    assert.ok((await card.innerText()).replace(/\s/g, '').includes(a.number));
  }
  await H.snapshot(page, 'overview');
  assert.deepEqual(await accessibilityViolations(page), [], 'the overview');
});

test('a payment to the customer changes the overview’s balance without reload', async () => {
  await page.evaluate(() => { /** @type {any} */ (window).notReloaded = true; });
  const before = await adaAccount(adaEur.id);
  const paid = await H.payment(server.base, bob, { fromAccount: bobEur.id, toAccountNumber: adaEur.number, amount: '3.21', reference: 'Live overview' });
  assert.equal(paid.status, 201, paid.text);
  const after = await adaAccount(adaEur.id);
  assert.notEqual(after.balances.posted.amount, before.balances.posted.amount);
  const started = Date.now();
  const posted = page.locator(`li.account[data-account="${adaEur.id}"] [data-balance="posted"]`);
  await posted.filter({ hasText: money(after.balances.posted) }).waitFor({ timeout: 10_000 });
  console.log(`overview balance updated ${Date.now() - started} ms after the payment's answer`);
  assert.equal(await page.evaluate(() => /** @type {any} */ (window).notReloaded), true, 'no reload');
});

test('the history filters by direction, amount and kind, and marks pending payments', async () => {
  await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Transactions' }).click();
  await page.getByRole('heading', { name: /Transactions — EUR/ }).waitFor();
  const rows = page.locator('tbody tr[data-state="posted"]');
  const all = (await H.api(server.base, ada, 'GET', `/v1/accounts/${adaEur.id}/transactions?limit=25`)).json.items;
  await page.locator('[role="status"]', { hasText: `${all.length} transactions shown` }).waitFor();
  assert.equal(await rows.count(), all.length);
  assert.deepEqual(
    await rows.evaluateAll((trs) => trs.map((tr) => /** @type {HTMLElement} */ (tr).dataset.transfer)),
    all.map((/** @type {any} */ t) => t.transfer_id),
    'newest first, as the API',
  );
  const first = rows.first();
  assert.ok((await first.innerText()).includes('Live overview'), await first.innerText());

  await page.getByLabel('Direction').selectOption('debit');
  await page.getByRole('button', { name: 'Apply' }).click();
  const debits = all.filter((/** @type {any} */ t) => t.direction === 'debit');
  await page.locator('[role="status"]', { hasText: `${debits.length} transactions shown` }).waitFor();
  // The demo's two payments out, its payment to another bank (settled through the rail), its
  // payment abroad (the amount converted and the fee) and its loan (the fee, the first
  // instalment's principal and interest).
  assert.equal(await rows.count(), debits.length);
  assert.equal(debits.length, 8);
  for (const kind of ['interbank', 'fx', 'fee', 'loan', 'interest']) {
    assert.ok(debits.some((/** @type {any} */ t) => t.kind === kind), `a ${kind} debit`);
  }
  for (const text of await rows.allInnerTexts()) assert.match(text, /−|-/, `a debit: ${text}`);

  await page.getByRole('button', { name: 'Clear' }).click();
  await page.getByLabel(/Min amount/).fill('10');
  await page.getByLabel(/Max amount/).fill('20');
  await page.getByRole('button', { name: 'Apply' }).click();
  // 10.00 to 20.00, counted in cents from the API's decimal strings.
  const cents = (/** @type {string} */ s) => { const [i, f = ''] = s.split('.'); return Number(i) * 100 + Number((f + '00').slice(0, 2)); };
  const between = all.filter((/** @type {any} */ t) => cents(t.amount.amount) >= 1000 && cents(t.amount.amount) <= 2000);
  assert.ok(between.length >= 2, 'the two demo payments are in the range');
  await page.locator('[role="status"]', { hasText: `${between.length} transactions shown` }).waitFor();
  const texts = (await rows.allInnerTexts()).join('\n');
  assert.ok(texts.includes('Lunch, split') && texts.includes('Bike repair'), texts);

  await page.getByRole('button', { name: 'Clear' }).click();
  await page.getByLabel('Kind').selectOption('deposit');
  await page.getByRole('button', { name: 'Apply' }).click();
  await page.locator('[role="status"]', { hasText: '1 transaction shown' }).waitFor();
  await page.getByRole('button', { name: 'Clear' }).click();
  await page.locator('[role="status"]', { hasText: `${all.length} transactions shown` }).waitFor();

  // Dates are the customer's days (the browser's time zone is London's): from the oldest line's
  // day to the newest's holds everything, the day after nothing.
  const day = (/** @type {string} */ iso, plusDays = 0) =>
    new Intl.DateTimeFormat('en-CA', { timeZone: 'Europe/London' }).format(new Date(Date.parse(iso) + plusDays * 86_400_000));
  await page.getByLabel('From').fill(day(all[all.length - 1].posted_at));
  await page.getByLabel('To').fill(day(all[0].posted_at));
  await page.getByRole('button', { name: 'Apply' }).click();
  await page.locator('[role="status"]', { hasText: `${all.length} transactions shown` }).waitFor();
  await page.getByLabel('From').fill(day(all[0].posted_at, 1.5));
  await page.getByLabel('To').fill(day(all[0].posted_at, 1.5));
  await page.getByRole('button', { name: 'Apply' }).click();
  await page.locator('[role="status"]', { hasText: '0 transactions shown' }).waitFor();
  await page.getByText('No transactions match.').waitFor();
  await page.getByRole('button', { name: 'Clear' }).click();
  await page.locator('[role="status"]', { hasText: `${all.length} transactions shown` }).waitFor();

  // A payment above the low-value limits waits for SCA: it holds money and is marked pending.
  const held = await H.payment(server.base, ada, { fromAccount: adaEur.id, toAccountNumber: bobEur.number, amount: '250.00', reference: 'Deposit for the flat' });
  assert.equal(held.status, 202, held.text);
  const pendingRow = page.locator(`tr[data-state="pending"][data-transfer="${held.json.transfer.id}"]`);
  await pendingRow.waitFor({ timeout: 10_000 });
  assert.match(await pendingRow.innerText(), /pending/i);
  assert.match(await pendingRow.innerText(), /250\.00/);
  const now = await adaAccount(adaEur.id);
  await page.locator('section [data-balance="available"]', { hasText: money(now.balances.available) }).waitFor({ timeout: 10_000 });
  await H.snapshot(page, 'history');
  assert.deepEqual(await accessibilityViolations(page), [], 'the history');
});

test('"Load more" follows the API\'s cursor to the oldest line, with no line twice', async () => {
  const adaUsd = adaAccounts.find((a) => a.currency === 'USD');
  const bobUsd = (await H.api(server.base, bob, 'GET', '/v1/accounts')).json.accounts.find((/** @type {any} */ a) => a.currency === 'USD');
  for (let i = 1; i <= 30; i++) {
    const paid = await H.payment(server.base, bob, { fromAccount: bobUsd.id, toAccountNumber: adaUsd.number, amount: `0.${String(i).padStart(2, '0')}`, currency: 'USD', reference: `Pocket money ${i}` });
    assert.equal(paid.status, 201, paid.text);
  }
  await page.getByLabel('Account', { exact: true }).selectOption(adaUsd.id);
  await page.getByRole('heading', { name: /Transactions — USD/ }).waitFor();
  await page.locator('[role="status"]', { hasText: '25 transactions shown; more are older' }).waitFor();
  await page.getByRole('button', { name: 'Load more' }).click();
  await page.locator('[role="status"]', { hasText: '31 transactions shown.' }).waitFor();
  assert.equal(await page.getByRole('button', { name: 'Load more' }).isHidden(), true, 'no more to load');
  const all = (await H.api(server.base, ada, 'GET', `/v1/accounts/${adaUsd.id}/transactions?limit=100`)).json.items;
  const shown = await page.locator('tbody tr[data-state="posted"]').evaluateAll((trs) => trs.map((tr) => /** @type {HTMLElement} */ (tr).dataset.seq));
  assert.deepEqual(shown, all.map((/** @type {any} */ t) => String(t.seq)));
  assert.ok((await page.locator('tbody').innerText()).includes('+US$0.30'));
  await page.getByLabel('Account', { exact: true }).selectOption(adaEur.id);
  await page.getByRole('heading', { name: /Transactions — EUR/ }).waitFor();
  await page.locator('[role="status"]', { hasText: /transactions shown/ }).waitFor();
});

test('a payment to the customer appears in the open history, once, without reload', async () => {
  const paid = await H.payment(server.base, bob, { fromAccount: bobEur.id, toAccountNumber: adaEur.number, amount: '6.40', reference: 'Live history' });
  assert.equal(paid.status, 201, paid.text);
  const started = Date.now();
  const row = page.locator(`tr[data-state="posted"][data-transfer="${paid.json.transfer.id}"]`);
  await row.waitFor({ timeout: 10_000 });
  console.log(`history row appeared ${Date.now() - started} ms after the payment's answer`);
  assert.match(await row.innerText(), /Live history/);
  assert.match(await row.innerText(), /\+€6\.40/);
  const now = await adaAccount(adaEur.id);
  await page.locator('section [data-balance="posted"]', { hasText: money(now.balances.posted) }).waitFor({ timeout: 10_000 });
  assert.equal(await row.count(), 1);
  assert.equal(await page.evaluate(() => /** @type {any} */ (window).notReloaded), true, 'no reload');

  // A burst: three payments at once, their events close together; each row once. A filter typed
  // but not applied changes nothing: the rows follow the filters shown as applied.
  await page.getByLabel(/Min amount/).fill('500');
  const burst = await Promise.all(['1.01', '1.02', '1.03'].map((amount) =>
    H.payment(server.base, bob, { fromAccount: bobEur.id, toAccountNumber: adaEur.number, amount, reference: `Burst ${amount}` })));
  for (const paid of burst) {
    assert.equal(paid.status, 201, paid.text);
    await page.locator(`tr[data-state="posted"][data-transfer="${paid.json.transfer.id}"]`).waitFor({ timeout: 10_000 });
  }
  const all = (await H.api(server.base, ada, 'GET', `/v1/accounts/${adaEur.id}/transactions?limit=100`)).json.items;
  await page.locator('[role="status"]', { hasText: `${all.length} transactions shown` }).waitFor({ timeout: 10_000 });
  const shown = await page.locator('tbody tr[data-state="posted"]').evaluateAll((trs) => trs.map((tr) => /** @type {HTMLElement} */ (tr).dataset.seq));
  assert.deepEqual(shown, all.map((/** @type {any} */ t) => String(t.seq)), 'every line once, newest first');
  await page.getByLabel(/Min amount/).fill('');
});

test('a broken stream shows in the indicator, recovers, and the page catches up with no gap or double', async () => {
  // Keep the page from reconnecting while the server restarts and a payment is made: what it
  // then shows can only come from resuming with its cursor.
  await page.route('**/v1/events?*', (route) => route.abort('connectionrefused'));
  await server.restart();
  await page.locator('#live:not([data-state="live"])').waitFor({ timeout: 10_000 });
  const indicator = await page.locator('#live').innerText();
  assert.match(indicator, /Reconnecting|Offline|Connecting/);
  const missed = await H.payment(server.base, bob, { fromAccount: bobEur.id, toAccountNumber: adaEur.number, amount: '2.22', reference: 'While away' });
  assert.equal(missed.status, 201, missed.text);
  await H.snapshot(page, 'reconnecting');
  await page.unroute('**/v1/events?*');
  await liveIs('live', 30_000);
  const row = page.locator(`tr[data-state="posted"][data-transfer="${missed.json.transfer.id}"]`);
  await row.waitFor({ timeout: 10_000 });
  assert.equal(await row.count(), 1);
  // Every line of the API's history is on the page exactly once.
  const all = (await H.api(server.base, ada, 'GET', `/v1/accounts/${adaEur.id}/transactions?limit=100`)).json.items;
  const shown = await page.locator('tbody tr[data-state="posted"]').evaluateAll((trs) => trs.map((tr) => /** @type {HTMLElement} */ (tr).dataset.seq));
  assert.deepEqual(shown, all.map((/** @type {any} */ t) => String(t.seq)));
  const now = await adaAccount(adaEur.id);
  assert.equal(await page.locator('section [data-balance="posted"]').innerText(), money(now.balances.posted));
  assert.equal(await page.evaluate(() => /** @type {any} */ (window).notReloaded), true, 'no reload');
});

test('the access token is refreshed silently, and the refresh token rotates', async () => {
  // The app refreshes on the customer's activity only (a request of theirs finding the token
  // within a minute of expiry: with 70-s tokens, 10 s after each refresh): keep using it.
  let using = true;
  const use = (async () => {
    for (let i = 0; using; i++) {
      await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: i % 2 ? 'Transactions' : 'Services' }).click();
      await new Promise((resolve) => setTimeout(resolve, 2000));
    }
  })();
  /** @type {string[]} */
  const used = [];
  for (let i = 0; i < 2; i++) {
    const request = await page.waitForRequest(
      (r) => r.url().endsWith('/oauth2/token') && (r.postData() ?? '').includes('grant_type=refresh_token'),
      { timeout: ACCESS_TTL_S * 1000 },
    );
    const response = await request.response();
    assert.equal(response?.status(), 200);
    used.push(new URLSearchParams(request.postData() ?? '').get('refresh_token') ?? '');
  }
  using = false;
  await use;
  assert.notEqual(used[0], used[1], 'each refresh uses the token the previous one returned');
  // Still signed in, still live, and the API still answers the page.
  await liveIs('live');
  await page.getByRole('link', { name: 'Overview' }).click();
  await page.getByRole('heading', { name: 'Hello, Ada Lovelace' }).waitFor();
  await page.getByRole('link', { name: 'Transactions' }).first().click();
  await page.getByRole('heading', { name: /Transactions — EUR/ }).waitFor();
});

test('an API error is shown in plain words with its problem type', async () => {
  await page.getByLabel(/Min amount/).fill('12.345.6');
  await page.getByRole('button', { name: 'Apply' }).click();
  const banner = page.getByRole('alert');
  await banner.waitFor();
  const text = await banner.innerText();
  assert.match(text, /amount_min/);
  assert.match(text, /urn:bp:problem:[a-z-]+/);
  await banner.getByRole('button', { name: 'Dismiss' }).click();
  await page.getByRole('button', { name: 'Clear' }).click();
});

test('services list the demo interbank payment (the simulator is the rail); the profile masks documents', async () => {
  await page.getByRole('link', { name: 'Services' }).click();
  await page.locator('tr[data-service]').first().waitFor();
  // The demo's payment abroad: 250.00 EUR at 0.8571 with a 1.12 fee (0.45%) is 251.12 EUR out
  // and 214.28 GBP in (214.275 rounded half-even).
  const abroad = page.locator('tr[data-service]', { hasText: 'International transfer' });
  await abroad.first().waitFor();
  const fx = await abroad.first().locator('[data-fx]').innerText();
  assert.match(fx, /251\.12/, fx);
  assert.match(fx, /214\.28/, fx);
  assert.match(fx, /at 0\.8571, fee .*1\.12/, fx);
  // A payment to another bank, made while the view is open, appears and settles without reload.
  await page.evaluate(() => { /** @type {any} */ (window).__sameDocument = true; });
  const paid = await H.api(server.base, ada, 'POST', '/v1/interbank-transfers', {
    body: { from_account: adaEur.id, to_iban: 'DE89 3704 0044 0532 0130 00', to_name: 'Erika Mustermann', amount: { amount: '20.00', currency: 'EUR' } },
    headers: { 'idempotency-key': H.uuidv7() },
  });
  assert.equal(paid.status, 202, paid.text);
  const started = Date.now();
  const row = page.locator(`tr[data-service="${paid.json.service}"]`);
  await row.waitFor({ timeout: 15_000 });
  await page.locator(`tr[data-service="${paid.json.service}"][data-status="settled"]`).waitFor({ timeout: 15_000 });
  console.log(`interbank payment settled on the open Services view ${Date.now() - started} ms after the API's answer`);
  assert.equal(await page.evaluate(() => /** @type {any} */ (window).__sameDocument), true, 'no reload');
  assert.match(await row.innerText(), /settled/i);
  assert.match(await row.innerText(), /Erika Mustermann · DE … 3000/, 'the payee, its IBAN masked');
  await H.snapshot(page, 'services');
  await page.getByRole('link', { name: 'Profile' }).click();
  await page.getByRole('heading', { name: 'Profile' }).waitFor();
  const text = await page.locator('main').innerText();
  const me = (await H.api(server.base, ada, 'GET', '/v1/me')).json;
  for (const d of me.documents) {
    assert.ok(!text.includes(d.number), 'a document number is never shown whole');
    assert.ok(text.includes(d.number_masked));
  }
  assert.ok(text.includes(me.contact.email));
  assert.deepEqual(await accessibilityViolations(page), [], 'the profile');
  await page.getByRole('link', { name: 'Services' }).click();
  await page.locator('tr[data-service]').first().waitFor();
  assert.deepEqual(await accessibilityViolations(page), [], 'the services');
});

test('works with the keyboard alone and at phone width', async () => {
  // A reload forgets the tokens (memory only): sign in again.
  await page.reload();
  const { password, totpSecret } = H.credentials(server.dataDir, 'ada');
  await page.getByRole('button', { name: 'Sign in' }).focus();
  await page.keyboard.press('Enter');
  await page.locator('#username').fill('ada');
  await page.locator('#password').fill(password);
  await page.keyboard.press('Enter');
  await page.locator('#code').fill(await H.freshTotp(totpSecret));
  await page.keyboard.press('Enter');
  // Back where the customer was when signing in: the services.
  await page.getByRole('heading', { name: 'Services' }).waitFor();
  // The heading comes before the list, which loads after it: wait for the loan's schedule as a
  // customer would before tabbing into it.
  await page.locator('tr[data-service] summary').first().waitFor();
  // The view put the focus on its content (main): Tab goes on into it (the loan's schedule),
  // then around to the top of the page, whose first stop is the skip link.
  assert.equal(await page.evaluate(() => document.activeElement?.id), 'main');
  await page.keyboard.press('Tab');
  assert.match(await page.evaluate(() => document.activeElement?.textContent ?? ''), /^Schedule: /);
  let stop = '';
  for (let i = 0; i < 10 && stop !== 'Skip to content'; i++) {
    await page.keyboard.press('Tab');
    stop = await page.evaluate(() => document.activeElement?.textContent ?? '');
  }
  assert.equal(stop, 'Skip to content');
  // Tab to the navigation's Transactions link and follow it.
  let focused = '';
  for (let i = 0; i < 10 && focused !== 'Transactions'; i++) {
    await page.keyboard.press('Tab');
    focused = await page.evaluate(() => document.activeElement?.textContent?.trim() ?? '');
  }
  assert.equal(focused, 'Transactions');
  const outline = await page.evaluate(() => getComputedStyle(/** @type {Element} */ (document.activeElement)).outlineStyle);
  assert.notEqual(outline, 'none', 'focus is visible');
  await page.keyboard.press('Enter');
  await page.getByRole('heading', { name: /Transactions — EUR/ }).waitFor();

  await page.setViewportSize({ width: 375, height: 800 });
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 0, `no sideways scrolling at phone width (${overflow}px too wide)`);
  await H.snapshot(page, 'history-phone', { fullPage: true });
  await page.setViewportSize({ width: 1280, height: 860 });
});

test('sign-out revokes the session and leaves nothing behind', async () => {
  const revoked = page.waitForResponse((r) => r.url().endsWith('/oauth2/revoke'));
  await page.getByRole('button', { name: 'Sign out' }).click();
  assert.equal((await revoked).status(), 200);
  await page.getByText('You have signed out.').waitFor();
  assert.equal(await page.locator('#nav').isHidden(), true);
  assert.deepEqual(consoleErrors.filter((m) => /Content Security Policy|Refused to/.test(m)), [], 'no CSP violations');
  // Failed requests are logged too: the refused stream while the test blocked it, and the 422 of
  // the malformed filter. Anything else is a script error.
  const unexpected = consoleErrors.filter((m) => !/^Failed to load resource|net::ERR_CONNECTION_REFUSED/.test(m));
  assert.deepEqual(unexpected, [], 'no script errors');
});
