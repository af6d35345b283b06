// Passkeys end to end, in headless Chromium with a virtual authenticator (the DevTools protocol's
// WebAuthn domain: CTAP2, internal transport, resident keys, user verification that succeeds):
// sign in with password and TOTP, register a passkey in the app's Security view, sign out, sign
// in with username and passkey alone, remove the passkey, and be refused with it; and a passkey
// sign-in from another origin (the same server reached as 127.0.0.1 while its RP ID is
// localhost) fails. The server is reached as http://localhost:PORT: WebAuthn needs a domain name.

import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { after, afterEach, before, test } from 'node:test';
import * as H from './harness.mjs';

/** @type {Awaited<ReturnType<typeof H.startServer>>} */ let server;
/** @type {import('playwright-core').Browser} */ let browser;
/** @type {import('playwright-core').Page} */ let page;
/** @type {string} */ let base;
/** @type {string} */ let authenticatorId;
/** @type {import('playwright-core').CDPSession} */ let cdp;
const consoleErrors = /** @type {string[]} */ ([]);

/** A free loopback port. */
async function freePort() {
  return new Promise((resolve, reject) => {
    const probe = createServer();
    probe.once('error', reject);
    probe.listen(0, '127.0.0.1', () => {
      const address = probe.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      probe.close(() => resolve(port));
    });
  });
}

before(async () => {
  const port = await freePort();
  base = `http://localhost:${port}`;
  const config = join(H.outDir(), `passkeys-${port}.toml`);
  writeFileSync(config, [
    '[[auth.clients]]', 'id = "bp-web"', 'name = "bp web banking"', `redirect_uris = ["${base}/callback"]`, '',
  ].join('\n'));
  server = await H.startServer({
    args: ['--config', config],
    env: { BP_SERVER__LISTEN: `127.0.0.1:${port}`, BP_SERVER__PUBLIC_URL: base },
  });
  browser = await H.launchBrowser();
  const context = await browser.newContext({ locale: 'en-GB', viewport: { width: 1100, height: 800 } });
  page = await context.newPage();
  page.on('console', (m) => {
    if (m.type() === 'error') consoleErrors.push(m.text());
  });
  page.on('pageerror', (e) => consoleErrors.push(e.message));
  cdp = await context.newCDPSession(page);
  await cdp.send('WebAuthn.enable');
  const added = await cdp.send('WebAuthn.addVirtualAuthenticator', {
    options: {
      protocol: 'ctap2',
      transport: 'internal',
      hasResidentKey: true,
      hasUserVerification: true,
      isUserVerified: true,
      automaticPresenceSimulation: true,
    },
  });
  authenticatorId = added.authenticatorId;
});

after(async () => {
  await browser?.close();
  await server?.cleanup();
});

afterEach(async (t) => {
  if (/** @type {any} */ (t).passed === false) {
    console.error(server.logs(40).join('\n'));
    console.error(consoleErrors.join('\n'));
    await H.snapshot(page, `passkeys-failed-${t.name}`);
  }
});

/** Signs ada in through the login pages with password and TOTP. */
async function signInWithPassword() {
  const { password, totpSecret } = H.credentials(server.dataDir, 'ada');
  await page.goto(`${base}/`);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.locator('#username').fill('ada');
  await page.locator('#password').fill(password);
  await page.getByRole('button', { name: 'Continue' }).click();
  await page.locator('#code').fill(await H.freshTotp(totpSecret));
  await page.locator('#code').press('Enter');
  await page.getByRole('heading', { name: 'Hello, Ada Lovelace' }).waitFor();
}

async function signOut() {
  await page.getByRole('button', { name: 'Sign out' }).click();
  await page.getByRole('button', { name: 'Sign in' }).waitFor();
}

/** From the app's landing page to the sign-in page, then "Sign in with a passkey" as ada. */
async function passkeySignIn() {
  // From the overview (the app returns to the view it was signed in from).
  await page.goto(`${base}/#/overview`);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.locator('#username').fill('ada');
  await page.getByRole('button', { name: 'Sign in with a passkey' }).click();
}

test('a passkey registered in the app signs ada in alone, and not once removed', async () => {
  await signInWithPassword();
  await page.getByRole('link', { name: 'Security' }).click();
  await page.getByRole('heading', { name: 'Passkeys' }).waitFor();
  await page.locator('[data-empty="passkeys"]').waitFor();
  await page.locator('#passkey-name').fill('Work laptop');
  await page.getByRole('button', { name: 'Add a passkey' }).click();
  await page.locator('#passkey-message.ok', { hasText: 'Added the passkey “Work laptop”' }).waitFor();
  await page.locator('[data-passkey]', { hasText: 'Work laptop' }).waitFor();
  const { credentials } = await cdp.send('WebAuthn.getCredentials', { authenticatorId });
  assert.equal(credentials.length, 1, 'the authenticator holds the new passkey');
  assert.equal(credentials[0].rpId, 'localhost');
  assert.equal(credentials[0].isResidentCredential, true);
  await H.snapshot(page, 'passkeys-list');
  await signOut();

  await passkeySignIn();
  await page.getByRole('heading', { name: 'Hello, Ada Lovelace' }).waitFor();
  await page.getByText('EUR', { exact: false }).first().waitFor();
  await page.getByRole('link', { name: 'Security' }).click();
  await page.locator('[data-passkey]', { hasText: 'last used' }).waitFor();
  await page.locator('[data-passkey] button', { hasText: 'Remove' }).click();
  await page.locator('#passkey-message.ok', { hasText: 'Removed the passkey' }).waitFor();
  await page.locator('[data-empty="passkeys"]').waitFor();
  await signOut();

  // The authenticator still holds it; the bank no longer knows it.
  await passkeySignIn();
  await page.getByRole('alert').filter({ hasText: 'That passkey was not accepted' }).waitFor();
  assert.equal(await page.locator('#username').inputValue(), 'ada', 'the username typed stays');
  await H.snapshot(page, 'passkeys-sign-in-refused');
  assert.deepEqual(consoleErrors, [], 'no console errors (CSP and icon included)');
});

test('another origin cannot use the passkey', async () => {
  // Register one again, from localhost.
  await page.goto(`${base}/`);
  await signInWithPassword();
  await page.getByRole('link', { name: 'Security' }).click();
  await page.locator('#passkey-name').fill('Second');
  await page.getByRole('button', { name: 'Add a passkey' }).click();
  await page.locator('[data-passkey]', { hasText: 'Second' }).waitFor();
  await signOut();
  // The sign-in page as served at 127.0.0.1 (the same server): the browser refuses an RP ID that
  // is not the origin's, so no assertion is made at all.
  const port = new URL(base).port;
  const other = await browser.newPage();
  const response = await other.goto(`http://127.0.0.1:${port}/oauth2/authorize?${new URL(await authorizeUrl()).searchParams}`);
  assert.equal(response?.status(), 200);
  await other.locator('#username').fill('ada');
  await other.getByRole('button', { name: 'Sign in with a passkey' }).click();
  await other.locator('#passkey-status', { hasText: /cannot be used at this address|cancelled|not accepted/ }).waitFor();
  assert.equal(new URL(other.url()).hostname, '127.0.0.1', 'still on the sign-in page');
  await H.snapshot(other, 'passkeys-other-origin');
  await other.close();
});

/** An authorization request of the web client, as the app makes it (for the other origin). */
async function authorizeUrl() {
  const { challenge } = H.pkce();
  const q = new URLSearchParams({
    response_type: 'code', client_id: 'bp-web', redirect_uri: `${base}/callback`, scope: H.SCOPE,
    state: 's', code_challenge: challenge, code_challenge_method: 'S256',
  });
  return `${base}/oauth2/authorize?${q}`;
}

test('the sign-in page offers the passkey under a strict CSP', async () => {
  await page.goto(`${base}/`);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('button', { name: 'Sign in with a passkey' }).waitFor();
  const response = await page.request.get(page.url());
  const csp = response.headers()['content-security-policy'] ?? '';
  assert.match(csp, /script-src 'self'(;|$)/);
  assert.doesNotMatch(csp, /unsafe-inline/);
  await page.getByRole('button', { name: 'Sign in with a passkey' }).click();
  await page.locator('#passkey-status', { hasText: 'Enter your username first' }).waitFor();
  await H.snapshot(page, 'passkeys-sign-in-page');
});
