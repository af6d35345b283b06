// The end-to-end tests' harness: starts the reference server binary on a fresh data dir, signs in
// through the real OAuth2 login pages, calls the API, and launches Debian's Chromium through
// playwright-core. Node built-ins and playwright-core only.
//
// scripts/web-test.sh sets the environment it reads:
//   BP_SERVER_BIN  the server binary (required)
//   BP_E2E_OUT     a folder for screenshots and page dumps (default: a temp folder)
//   BP_CHROMIUM    the browser (default: /usr/bin/chromium)
//
// A test file uses it like this:
//
//   import { after, afterEach, before, test } from 'node:test';
//   import { startServer, apiLogin, launchBrowser } from './harness.mjs';
//   let server, browser;
//   before(async () => { server = await startServer(); browser = await launchBrowser(); });
//   after(async () => { await browser?.close(); await server?.cleanup(); });
//   afterEach((t) => { if (t.passed === false) console.error(server.logs(50).join('\n')); });
//
// TOTP codes are accepted once: the server remembers each customer's last used time step and
// rejects a code of that step or an earlier one. `freshTotp` (which `apiLogin` uses) hands out
// codes of increasing steps per secret, waiting for the next step when it must; use it (not
// `totp`) for every code a test types or sends, or the second sign-in within 30 s fails.

import { spawn } from 'node:child_process';
import { createHash, createHmac, generateKeyPairSync, randomBytes, randomUUID, sign } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** The Chromium that Debian's `chromium` package installs; playwright never downloads one here. */
export const CHROMIUM = process.env.BP_CHROMIUM || '/usr/bin/chromium';

/** The web client registered in the server's default configuration. */
export const CLIENT_ID = 'bp-web';

/** The scopes the web app asks for. */
export const SCOPE = 'openid profile accounts payments offline_access';

/** How many of the server's output lines each server keeps in memory. */
const LOG_LINES_MAX = 5000;
/** How long the server may take to say it is serving. */
const START_TIMEOUT_MS = 60_000;
/** How long a graceful stop may take (the server's own grace is 10 s) before SIGKILL. */
const STOP_TIMEOUT_MS = 20_000;
/** The TOTP time step (RFC 6238), as the server uses it. */
const TOTP_STEP_MS = 30_000;

/** Every server started by this process and its temp data dir, so that none outlives it. */
const live = new Set();
/** @type {Set<string>} */
const tempDirs = new Set();
function killAll() {
  for (const child of live) {
    try {
      child.kill('SIGKILL');
    } catch {
      // Already gone.
    }
  }
  for (const dir of tempDirs) rmSync(dir, { recursive: true, force: true });
}
process.on('exit', killAll);
for (const signal of /** @type {const} */ (['SIGINT', 'SIGTERM'])) {
  process.once(signal, () => {
    killAll();
    process.kill(process.pid, signal);
  });
}

/** @param {number} ms */
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * @typedef {object} Server
 * @property {string} base      `http://127.0.0.1:<port>`, the same across restarts.
 * @property {string} dataDir   The server's data dir (SQLite file, signing key, demo credentials).
 * @property {() => Promise<void>} start    Starts it again after `stop`/`kill` (same port, same data).
 * @property {() => Promise<void>} stop     SIGTERM (graceful shutdown), then waits for the exit. Idempotent.
 * @property {() => Promise<void>} kill     SIGKILL (a crash), then waits for the exit. Idempotent.
 * @property {() => Promise<void>} restart  `stop` then `start`.
 * @property {() => Promise<void>} cleanup  `kill` and deletes the data dir. Idempotent; call it in `after`.
 * @property {(n?: number) => string[]} logs The last `n` (default 50) lines of the server's stdout
 *   (JSON log lines) and stderr (prefixed `stderr: `), across restarts.
 * @property {() => boolean} running Whether the process is up.
 */

/**
 * Starts the server binary (`BP_SERVER_BIN`) on a fresh temp data dir and a free loopback port,
 * and resolves once it logs `serving`. On this first start the server seeds the demo customers
 * `ada`, `bob` and `acme` and writes their credentials to `<dataDir>/demo-credentials.txt`
 * (see `credentials`).
 *
 * @param {object} [options]
 * @param {Record<string, string>} [options.env]  Extra environment (e.g. `BP_AUTH__LOGIN_ATTEMPTS_PER_MINUTE`:
 *   each sign-in takes two of the default 30 attempts per minute per IP).
 * @param {string[]} [options.args]  Arguments for the binary (e.g. `['--config', file]`).
 * @param {string} [options.dataDir] Use this data dir instead of a new temp one (not deleted by `cleanup`).
 * @returns {Promise<Server>}
 */
export async function startServer({ env = {}, args = [], dataDir } = {}) {
  const bin = process.env.BP_SERVER_BIN;
  if (!bin) throw new Error('BP_SERVER_BIN is not set: scripts/web-test.sh sets it to the server binary');
  const ownDir = !dataDir;
  const dir = dataDir ?? mkdtempSync(join(tmpdir(), 'bp-e2e-'));
  if (ownDir) tempDirs.add(dir);
  /** @type {string[]} */
  const lines = [];
  const keep = (/** @type {string} */ line) => {
    lines.push(line);
    if (lines.length > LOG_LINES_MAX) lines.splice(0, lines.length - LOG_LINES_MAX);
  };
  /** @type {import('node:child_process').ChildProcess | null} */
  let child = null;
  /** @type {Promise<void> | null} */
  let exited = null;
  let listen = '127.0.0.1:0';
  let cleaned = false;

  const start = async () => {
    if (cleaned) throw new Error('this server was cleaned up');
    if (child) throw new Error('the server is already running');
    const proc = spawn(bin, args, {
      env: {
        ...withoutRustLog(process.env),
        BP_SERVER__LISTEN: listen,
        BP_STORAGE__DATA_DIR: dir,
        BP_AUTH__ARGON2_MEMORY_KIB: '8192',
        BP_AUTH__ARGON2_ITERATIONS: '1',
        // The tests sign the same customers in many times a minute.
        BP_AUTH__LOGIN_ATTEMPTS_PER_USERNAME_PER_MINUTE: '10000',
        ...env,
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    child = proc;
    live.add(proc);
    // A test file that forgets `cleanup` still ends: the process and its pipes do not keep Node
    // alive, and the `exit` handler above kills the server.
    proc.unref();
    /** @type {any} */ (proc.stdout).unref?.();
    /** @type {any} */ (proc.stderr).unref?.();
    exited = new Promise((resolve) => {
      proc.once('exit', (code, signal) => {
        keep(`[harness] server exited (${signal ?? `code ${code}`})`);
        live.delete(proc);
        if (child === proc) child = null;
        resolve();
      });
    });
    eachLine(proc.stderr, (line) => keep(`stderr: ${line}`));
    /** @type {(line: string) => void} */
    let onServing = () => {};
    eachLine(proc.stdout, (line) => {
      keep(line);
      if (line.includes('"serving"')) onServing(line);
    });
    const address = await new Promise((resolve, reject) => {
      const onError = (/** @type {Error} */ e) => fail(`cannot start ${bin}: ${e.message}`);
      const onExit = (/** @type {number | null} */ code, /** @type {string | null} */ sig) =>
        fail(`the server exited (${sig ?? `code ${code}`}) before serving`);
      const timer = setTimeout(() => fail(`the server did not log "serving" in ${START_TIMEOUT_MS} ms`), START_TIMEOUT_MS);
      const settle = () => {
        clearTimeout(timer);
        proc.off('error', onError);
        proc.off('exit', onExit);
        onServing = () => {};
      };
      const fail = (/** @type {string} */ why) => {
        settle();
        proc.kill('SIGKILL');
        reject(new Error(`${why}; its last lines:\n${lines.slice(-30).join('\n')}`));
      };
      proc.once('error', onError);
      proc.once('exit', onExit);
      onServing = (line) => {
        try {
          const { address } = JSON.parse(line);
          if (typeof address === 'string') {
            settle();
            resolve(address);
          }
        } catch {
          // Not the JSON log line we wait for.
        }
      };
    });
    listen = address;
  };

  const waitExit = async (/** @type {NodeJS.Signals} */ signal) => {
    const proc = child;
    if (!proc || !exited) return;
    const done = exited;
    proc.kill(signal);
    let timer;
    const timeout = new Promise((resolve) => {
      timer = setTimeout(resolve, STOP_TIMEOUT_MS, 'timeout');
    });
    if ((await Promise.race([done, timeout])) === 'timeout') {
      keep(`[harness] no exit ${STOP_TIMEOUT_MS} ms after ${signal}: SIGKILL`);
      proc.kill('SIGKILL');
      await done;
    }
    clearTimeout(timer);
  };

  await start();
  const server = {
    base: `http://${listen}`,
    dataDir: dir,
    start,
    stop: () => waitExit('SIGTERM'),
    kill: () => waitExit('SIGKILL'),
    restart: async () => {
      await waitExit('SIGTERM');
      await start();
    },
    cleanup: async () => {
      await waitExit('SIGKILL');
      if (!cleaned && ownDir) {
        rmSync(dir, { recursive: true, force: true });
        tempDirs.delete(dir);
      }
      cleaned = true;
    },
    logs: (n = 50) => lines.slice(-n),
    running: () => child !== null,
  };
  return server;
}

/** @param {NodeJS.ProcessEnv} env */
function withoutRustLog(env) {
  const copy = { ...env };
  delete copy.RUST_LOG;
  return copy;
}

/**
 * Calls `onLine` with every line of `stream`.
 * @param {import('node:stream').Readable | null} stream
 * @param {(line: string) => void} onLine
 */
function eachLine(stream, onLine) {
  if (!stream) return;
  let rest = '';
  stream.setEncoding('utf8');
  stream.on('data', (/** @type {string} */ chunk) => {
    const parts = (rest + chunk).split('\n');
    rest = parts.pop() ?? '';
    for (const part of parts) onLine(part);
  });
  stream.on('end', () => {
    if (rest) onLine(rest);
  });
}

/**
 * The demo credentials of `username` (`ada`, `bob` or `acme`) from `<dataDir>/demo-credentials.txt`,
 * the line that starts with `JSON `.
 *
 * @param {string} dataDir
 * @param {string} username
 * @returns {{ username: string, password: string, totpSecret: string }}
 */
export function credentials(dataDir, username) {
  const text = readFileSync(join(dataDir, 'demo-credentials.txt'), 'utf8');
  const line = text.split('\n').find((l) => l.startsWith('JSON '));
  if (!line) throw new Error(`no JSON line in ${dataDir}/demo-credentials.txt`);
  /** @type {{ username: string, password: string, totp_secret: string }[]} */
  const all = JSON.parse(line.slice('JSON '.length));
  const found = all.find((c) => c.username === username);
  if (!found) throw new Error(`no demo customer ${username} (there are ${all.map((c) => c.username).join(', ')})`);
  return { username, password: found.password, totpSecret: found.totp_secret };
}

/**
 * Decodes RFC 4648 base32 (any case, padding and spaces ignored).
 * @param {string} text
 */
function base32Decode(text) {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
  const clean = text.toUpperCase().replace(/[\s=]/g, '');
  const bytes = [];
  let bits = 0;
  let value = 0;
  for (const ch of clean) {
    const index = alphabet.indexOf(ch);
    if (index < 0) throw new Error(`not base32: ${JSON.stringify(ch)}`);
    value = (value << 5) | index;
    bits += 5;
    if (bits >= 8) {
      bits -= 8;
      bytes.push((value >>> bits) & 0xff);
    }
  }
  return Buffer.from(bytes);
}

/**
 * The TOTP code of time step `step` (RFC 6238: HMAC-SHA1, 6 digits).
 * @param {string} secretBase32
 * @param {number} step
 */
function totpAtStep(secretBase32, step) {
  const counter = Buffer.alloc(8);
  counter.writeBigUInt64BE(BigInt(step));
  const mac = createHmac('sha1', base32Decode(secretBase32)).update(counter).digest();
  const offset = mac[mac.length - 1] & 0x0f;
  const binary = mac.readUInt32BE(offset) & 0x7fffffff;
  return String(binary % 1_000_000).padStart(6, '0');
}

/**
 * The RFC 6238 code (HMAC-SHA1, 30 s step, 6 digits) of a base32 secret at time `at` (ms since
 * the epoch), as an authenticator app shows it. See `freshTotp` for codes a test sends.
 *
 * @param {string} secretBase32
 * @param {number} [at]
 * @returns {string}
 */
export function totp(secretBase32, at = Date.now()) {
  return totpAtStep(secretBase32, Math.floor(at / TOTP_STEP_MS));
}

/** The last TOTP step handed out per secret by `freshTotp`. */
const usedSteps = new Map();

/**
 * A TOTP code the server has not seen yet: of a later time step than every code this process
 * handed out before for `secretBase32`. The server accepts the steps before, at and after the
 * current one, but each customer's steps only in increasing order; so this gives the current
 * step's code, or the next step's, or waits (up to 30 s) until one of those is unused.
 *
 * @param {string} secretBase32
 * @returns {Promise<string>}
 */
export async function freshTotp(secretBase32) {
  for (;;) {
    const now = Math.floor(Date.now() / TOTP_STEP_MS);
    const last = usedSteps.get(secretBase32) ?? -1;
    const step = Math.max(now, last + 1);
    if (step <= now + 1) {
      usedSteps.set(secretBase32, step);
      return totpAtStep(secretBase32, step);
    }
    await sleep((now + 1) * TOTP_STEP_MS - Date.now() + 50);
  }
}

/** @param {Buffer} bytes */
const base64url = (bytes) => bytes.toString('base64url');

/**
 * A PKCE pair (RFC 7636, S256).
 * @returns {{ verifier: string, challenge: string }}
 */
export function pkce() {
  const verifier = base64url(randomBytes(48));
  const challenge = base64url(createHash('sha256').update(verifier).digest());
  return { verifier, challenge };
}

/** @param {string} s */
function htmlUnescape(s) {
  return s
    .replace(/&quot;/g, '"')
    .replace(/&#39;|&#x27;/g, "'")
    .replace(/&lt;/g, '<')
    .replace(/&gt;/g, '>')
    .replace(/&amp;/g, '&');
}

/** The text of a login page's alert, to say why a step failed. @param {string} html */
function pageError(html) {
  const alert = html.match(/role="alert">([^<]*)</);
  const title = html.match(/<title>([^<]*)<\/title>/);
  return htmlUnescape((alert?.[1] ?? title?.[1] ?? html.slice(0, 200)).trim());
}

/**
 * A DPoP key (RFC 9449): a P-256 key pair, and the server's latest nonce for it.
 * @typedef {{ privateKey: import('node:crypto').KeyObject, jwk: { kty: string, crv: string, x: string, y: string },
 *   nonce: string }} DpopKey
 */

/** A new DPoP key. @returns {DpopKey} */
export function dpopKey() {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const { kty = 'EC', crv = 'P-256', x = '', y = '' } = publicKey.export({ format: 'jwk' });
  return { privateKey, jwk: { kty, crv, x, y }, nonce: '' };
}

/**
 * A DPoP proof of `key` for `method` on `url` (query dropped), for `accessToken` when given, with
 * the key's nonce when it has one; `claims` overrides what it says.
 * @param {DpopKey} key
 * @param {string} method
 * @param {string} url
 * @param {string | null} [accessToken]
 * @param {Record<string, unknown>} [claims]
 */
export function dpopProof(key, method, url, accessToken, claims = {}) {
  const u = new URL(url);
  /** @type {Record<string, unknown>} */
  const payload = { jti: base64url(randomBytes(16)), htm: method, htu: `${u.origin}${u.pathname}`, iat: Math.floor(Date.now() / 1000) };
  if (accessToken) payload.ath = base64url(createHash('sha256').update(accessToken).digest());
  if (key.nonce) payload.nonce = key.nonce;
  Object.assign(payload, claims);
  const json = (/** @type {unknown} */ v) => base64url(Buffer.from(JSON.stringify(v)));
  const signed = `${json({ typ: 'dpop+jwt', alg: 'ES256', jwk: key.jwk })}.${json(payload)}`;
  const signature = sign('sha256', Buffer.from(signed), { key: key.privateKey, dsaEncoding: 'ieee-p1363' });
  return `${signed}.${base64url(signature)}`;
}

/**
 * Keeps the nonce of `res` in `key`; whether `res` asked for one (retry once then).
 * @param {DpopKey} key
 * @param {Response} res
 * @param {any} [body] the token endpoint's JSON answer
 */
function tookNonce(key, res, body) {
  const nonce = res.headers.get('dpop-nonce');
  if (nonce) key.nonce = nonce;
  const asked = (res.status === 401 && /use_dpop_nonce/.test(res.headers.get('www-authenticate') ?? '')) ||
    (res.status === 400 && body?.error === 'use_dpop_nonce');
  return Boolean(nonce) && asked;
}

/** The DPoP key of each access token the harness got (`api` finds it there). @type {Map<string, DpopKey>} */
const keysOfTokens = new Map();

/**
 * A token request (`POST /oauth2/token` with `form`), with a proof of `key` when given (and a
 * second try when the server asks for its nonce); the token response, whose access token `api`
 * then uses with its key. Throws on an error answer.
 * @param {string} base
 * @param {DpopKey | null} key
 * @param {Record<string, string>} form
 * @returns {Promise<any>}
 */
export async function tokenRequest(base, key, form) {
  for (let attempt = 0; ; attempt++) {
    /** @type {Record<string, string>} */
    const headers = { 'content-type': 'application/x-www-form-urlencoded' };
    if (key) headers.dpop = dpopProof(key, 'POST', `${base}/oauth2/token`);
    const res = await fetch(`${base}/oauth2/token`, { method: 'POST', headers, body: new URLSearchParams(form) });
    const body = await res.json();
    if (key && attempt === 0 && tookNonce(key, res, body)) continue;
    if (res.status !== 200) throw new Error(`token: ${res.status} ${JSON.stringify(body)}`);
    if (key && body.token_type === 'DPoP') keysOfTokens.set(body.access_token, key);
    return body;
  }
}

/**
 * Refreshes `session` (a token response of `apiLogin`, which knows its key); the new one.
 * @param {string} base
 * @param {any} session
 * @param {string} [clientId]
 */
export function refreshTokens(base, session, clientId = CLIENT_ID) {
  const key = keysOfTokens.get(session.access_token) ?? null;
  return tokenRequest(base, key, { grant_type: 'refresh_token', refresh_token: session.refresh_token, client_id: clientId });
}

/**
 * Signs in as the demo customer `username` the way the web app's browser does (what
 * scripts/demo-login.sh does with curl): the authorization-code flow with PKCE through the HTML
 * login pages (password, then a TOTP code from `freshTotp`), then the token request.
 *
 * @param {string} base  The server, e.g. `server.base`.
 * @param {string} dataDir  Its data dir (for the demo credentials).
 * @param {string} username  `ada`, `bob` or `acme`.
 * @param {object} [options]
 * @param {string} [options.redirectUri]  Default `${base}/callback` (any port of a loopback
 *   redirect URI is accepted, RFC 8252 §7.3).
 * @param {string} [options.clientId]  Default `bp-web`.
 * @param {string} [options.scope]  Default `SCOPE`.
 * @param {DpopKey | null} [options.dpop]  The key to bind the session to: default a new one
 *   (`bp-web` needs one), `null` for none (a bearer client such as `bp-cli`).
 * @returns {Promise<{ access_token: string, refresh_token?: string, id_token?: string,
 *   token_type: string, expires_in: number, scope?: string, [k: string]: unknown }>}
 */
export async function apiLogin(base, dataDir, username, { redirectUri, clientId = CLIENT_ID, scope = SCOPE, dpop = dpopKey() } = {}) {
  const redirect = redirectUri ?? `${base}/callback`;
  const { password, totpSecret } = credentials(dataDir, username);
  const { verifier, challenge } = pkce();
  const state = base64url(randomBytes(12));
  /** @type {Map<string, string>} */
  const jar = new Map();
  const remember = (/** @type {Response} */ res) => {
    for (const cookie of res.headers.getSetCookie()) {
      const [pair] = cookie.split(';');
      const eq = pair.indexOf('=');
      if (eq > 0) jar.set(pair.slice(0, eq).trim(), pair.slice(eq + 1).trim());
    }
  };
  const cookieHeader = () => [...jar].map(([k, v]) => `${k}=${v}`).join('; ');
  const post = async (/** @type {string} */ path, /** @type {Record<string, string>} */ form) => {
    const res = await fetch(`${base}${path}`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded', cookie: cookieHeader() },
      body: new URLSearchParams(form),
      redirect: 'manual',
    });
    remember(res);
    return res;
  };

  // 1. The authorization request shows the login form and sets its cookie.
  const query = new URLSearchParams({
    response_type: 'code',
    client_id: clientId,
    redirect_uri: redirect,
    scope,
    state,
    code_challenge: challenge,
    code_challenge_method: 'S256',
  });
  const authorize = await fetch(`${base}/oauth2/authorize?${query}`, { redirect: 'manual' });
  remember(authorize);
  const form = await authorize.text();
  const tx = form.match(/name="tx" value="([^"]*)"/)?.[1];
  if (authorize.status !== 200 || !tx) {
    throw new Error(`authorize: ${authorize.status} ${authorize.headers.get('location') ?? pageError(form)}`);
  }
  const txValue = htmlUnescape(tx);

  // 2. Username and password: the answer is the second-factor page.
  const passwordRes = await post('/oauth2/login/password', { tx: txValue, username, password });
  const secondPage = await passwordRes.text();
  if (passwordRes.status !== 200 || !/name="code"/.test(secondPage)) {
    throw new Error(`login/password as ${username}: ${passwordRes.status} ${pageError(secondPage)}`);
  }

  // 3. The TOTP code: the answer redirects to the client with the authorization code.
  const code = await freshTotp(totpSecret);
  const secondRes = await post('/oauth2/login/second-factor', { tx: txValue, code });
  const location = secondRes.headers.get('location');
  if (secondRes.status < 300 || secondRes.status >= 400 || !location) {
    throw new Error(`login/second-factor as ${username}: ${secondRes.status} ${pageError(await secondRes.text())}`);
  }
  const back = new URL(location);
  const authCode = back.searchParams.get('code');
  if (!authCode) throw new Error(`login/second-factor redirected without a code: ${location}`);
  if (back.searchParams.get('state') !== state) throw new Error(`the state came back changed: ${location}`);

  // 4. The code and the PKCE verifier for tokens, with a proof of the session's key.
  return tokenRequest(base, dpop, {
    grant_type: 'authorization_code',
    code: authCode,
    redirect_uri: redirect,
    client_id: clientId,
    code_verifier: verifier,
  });
}

/**
 * Calls the API with an access token: a DPoP-bound one of `apiLogin` with a fresh proof of its
 * key (and a second try when the server asks for its nonce), any other as a bearer token. A
 * `body` object is sent as JSON. Never throws for an HTTP status: look at `status`.
 *
 * @param {string} base
 * @param {string | null} token  An access token, or null for none.
 * @param {string} method
 * @param {string} path  E.g. `/v1/accounts`.
 * @param {{ body?: unknown, headers?: Record<string, string> }} [options]
 * @returns {Promise<{ status: number, headers: Headers, json: any, text: string }>}
 *   `json` is the parsed body when it is JSON (also `application/problem+json`), else null.
 */
export async function api(base, token, method, path, { body, headers = {} } = {}) {
  /** @type {Record<string, string>} */
  const all = { accept: 'application/json', ...headers };
  const key = token ? keysOfTokens.get(token) : undefined;
  if (token) all.authorization = `${key ? 'DPoP' : 'Bearer'} ${token}`;
  /** @type {string | undefined} */
  let payload;
  if (body !== undefined) {
    payload = typeof body === 'string' ? body : JSON.stringify(body);
    all['content-type'] ??= 'application/json';
  }
  const send = () => {
    if (key) all.dpop = dpopProof(key, method, `${base}${path}`, token);
    return fetch(`${base}${path}`, { method, headers: all, body: payload });
  };
  let res = await send();
  if (key && tookNonce(key, res)) res = await send();
  const text = await res.text();
  let json = null;
  if (/json/.test(res.headers.get('content-type') ?? '') && text) json = JSON.parse(text);
  return { status: res.status, headers: res.headers, json, text };
}

/**
 * A UUIDv7 (RFC 9562): the millisecond time, then random bits. The API takes it as the
 * payment's `Idempotency-Key` (and so its transfer id).
 * @returns {string}
 */
export function uuidv7() {
  const bytes = randomBytes(16);
  const ms = BigInt(Date.now());
  for (let i = 0; i < 6; i += 1) bytes[i] = Number((ms >> BigInt(8 * (5 - i))) & 0xffn);
  bytes[6] = (bytes[6] & 0x0f) | 0x70;
  bytes[8] = (bytes[8] & 0x3f) | 0x80;
  const hex = bytes.toString('hex');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

/**
 * Pays from one of the token's customer's accounts to an account number: `POST /v1/transfers`
 * with a new `Idempotency-Key` (or the given one, to retry). Small amounts are posted at once
 * (201, `exemption: "low_value"`); others wait for SCA (202, `sca`).
 *
 * @param {string} base
 * @param {string} token
 * @param {object} payment
 * @param {string} payment.fromAccount  The payer's account id.
 * @param {string} payment.toAccountNumber  The payee's account number.
 * @param {string} payment.amount  A decimal string, e.g. `"1.25"`.
 * @param {string} [payment.currency]  Default `EUR`.
 * @param {string} [payment.reference]
 * @param {string} [payment.idempotencyKey]  Default a new UUIDv7.
 * @returns {Promise<{ status: number, headers: Headers, json: any, text: string, idempotencyKey: string }>}
 */
export async function payment(base, token, { fromAccount, toAccountNumber, amount, currency = 'EUR', reference, idempotencyKey }) {
  const key = idempotencyKey ?? uuidv7();
  /** @type {Record<string, unknown>} */
  const body = { from_account: fromAccount, to_account_number: toAccountNumber, amount: { amount, currency } };
  if (reference !== undefined) body.reference = reference;
  const res = await api(base, token, 'POST', '/v1/transfers', { body, headers: { 'idempotency-key': key } });
  return { ...res, idempotencyKey: key };
}

/**
 * Launches headless Chromium (Debian's, `CHROMIUM`) through playwright-core, with a fresh
 * profile (playwright makes a temp user-data-dir per launch and deletes it on `close`) and no
 * background traffic to Google's hosts, which are unreachable here. Close it in `after`.
 *
 * @param {import('playwright-core').LaunchOptions} [options]  Merged over the defaults.
 * @returns {Promise<import('playwright-core').Browser>}
 */
export async function launchBrowser(options = {}) {
  const { chromium } = await import('playwright-core');
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    timeout: 60_000,
    ...options,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--disable-default-apps',
      '--disable-domain-reliability',
      '--disable-breakpad',
      '--metrics-recording-only',
      '--no-default-browser-check',
      '--disable-dev-shm-usage',
      ...(options.args ?? []),
    ],
  });
}

/** The folder for screenshots and page dumps: `BP_E2E_OUT`, else one temp folder per process. */
let out = process.env.BP_E2E_OUT || '';
export function outDir() {
  if (!out) out = mkdtempSync(join(tmpdir(), 'bp-e2e-out-'));
  mkdirSync(out, { recursive: true });
  return out;
}

/**
 * Saves a screenshot and the page's HTML as `<outDir>/<name>.png` and `.html` (for a failing
 * test: call it in `afterEach` when `t.passed === false`, or in a catch). Never throws.
 * A full-page screenshot of a long page takes seconds (30 s for /openapi.json), hence the viewport
 * by default.
 *
 * @param {import('playwright-core').Page} page
 * @param {string} name  A file name without extension; unsafe characters become `_`.
 * @param {{ fullPage?: boolean }} [options]
 * @returns {Promise<string>}  The path of the screenshot.
 */
export async function snapshot(page, name, { fullPage = false } = {}) {
  const file = join(outDir(), name.replace(/[^A-Za-z0-9._-]+/g, '_'));
  try {
    writeFileSync(`${file}.html`, await page.content());
    await page.screenshot({ path: `${file}.png`, fullPage, timeout: 15_000 });
  } catch (e) {
    console.error(`snapshot ${name}: ${/** @type {Error} */ (e).message}`);
  }
  return `${file}.png`;
}

/** A random UUID (v4), for anything that needs only uniqueness. */
export const uuid = () => randomUUID();
