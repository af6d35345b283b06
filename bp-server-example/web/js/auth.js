// Signing in through the bank's own OAuth2 provider: authorization code with PKCE (S256) for the
// public client `bp-web`. Tokens live in this module's memory only — never in localStorage or
// sessionStorage — so a reload or a new tab signs in again. Only the PKCE verifier and the
// `state` value cross the redirect to the login pages, in sessionStorage, and are deleted when
// the code comes back. The access token is refreshed before it expires (the refresh token
// rotates on every use); signing out revokes the session.

const CLIENT_ID = 'bp-web';
const SCOPE = 'openid profile accounts offline_access';
const PENDING_KEY = 'bp.signin';
/** Refresh this many seconds before the access token expires. */
const REFRESH_MARGIN_S = 60;

/**
 * @typedef {object} TokenResponse
 * @property {string} access_token
 * @property {number} expires_in
 * @property {string} [refresh_token]
 * @property {string} scope
 */

/** @typedef {{ access: string, refresh: string | null, expiresAt: number }} Tokens */

/** An OAuth2 error answer (RFC 6749 §5.2), or no answer at all. */
export class AuthError extends Error {
  /**
   * @param {string} code the OAuth2 `error`, or `network`
   * @param {string} message
   */
  constructor(code, message) {
    super(message);
    this.code = code;
  }
}

/** @type {Tokens | null} */
let tokens = null;
/** @type {Promise<void> | null} */
let refreshing = null;
/** @type {ReturnType<typeof setTimeout> | undefined} */
let timer;
/** @type {Set<(reason: string) => void>} */
const signedOutListeners = new Set();

/** The redirect URI of this page: the server registers `/callback` of its own origin. */
export function redirectUri() {
  return `${location.origin}/callback`;
}

/** @param {number} bytes */
function randomText(bytes) {
  return base64url(crypto.getRandomValues(new Uint8Array(bytes)));
}

/** @param {Uint8Array} data */
function base64url(data) {
  let text = '';
  for (const byte of data) text += String.fromCharCode(byte);
  return btoa(text).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

/**
 * Leaves for the login pages. `returnTo` (a `#/…` route) is where the app opens afterwards.
 * @param {string} returnTo
 */
export async function beginSignIn(returnTo) {
  const verifier = randomText(48);
  const challenge = base64url(new Uint8Array(await crypto.subtle.digest('SHA-256', new TextEncoder().encode(verifier))));
  const state = randomText(16);
  sessionStorage.setItem(PENDING_KEY, JSON.stringify({ verifier, state, returnTo }));
  const query = new URLSearchParams({
    response_type: 'code',
    client_id: CLIENT_ID,
    redirect_uri: redirectUri(),
    scope: SCOPE,
    state,
    code_challenge: challenge,
    code_challenge_method: 'S256',
  });
  location.assign(`/oauth2/authorize?${query}`);
}

/** Whether this page load is the login pages' redirect back. */
export function isCallback() {
  return location.pathname === '/callback';
}

/**
 * Finishes a sign-in on `/callback`: checks `state`, exchanges the code with the verifier, and
 * returns the route to open. Throws an {@link AuthError} when the login was refused or stale.
 * @returns {Promise<string>}
 */
export async function completeSignIn() {
  const params = new URLSearchParams(location.search);
  const saved = sessionStorage.getItem(PENDING_KEY);
  sessionStorage.removeItem(PENDING_KEY);
  // The code must not stay in the address bar or the history.
  history.replaceState(null, '', '/');
  /** @type {{ verifier: string, state: string, returnTo: string } | null} */
  const pending = saved ? JSON.parse(saved) : null;
  const error = params.get('error');
  if (error) throw new AuthError(error, params.get('error_description') ?? 'The sign-in did not complete.');
  const code = params.get('code');
  if (!pending || !code || params.get('state') !== pending.state) {
    throw new AuthError('invalid_request', 'This sign-in was not started here, or was already used. Please sign in again.');
  }
  await tokenRequest({
    grant_type: 'authorization_code',
    code,
    redirect_uri: redirectUri(),
    client_id: CLIENT_ID,
    code_verifier: pending.verifier,
  });
  // Only a route of this app, never a URL.
  return /^#\/[\w/-]*$/.test(pending.returnTo) ? pending.returnTo : '#/overview';
}

/**
 * @param {Record<string, string>} form
 */
async function tokenRequest(form) {
  let response;
  try {
    response = await fetch('/oauth2/token', { method: 'POST', body: new URLSearchParams(form) });
  } catch {
    throw new AuthError('network', 'The bank cannot be reached. Check your connection and try again.');
  }
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    throw new AuthError(body.error ?? 'server_error', body.error_description ?? 'The sign-in service refused the request.');
  }
  const answer = /** @type {TokenResponse} */ (body);
  tokens = {
    access: answer.access_token,
    refresh: answer.refresh_token ?? tokens?.refresh ?? null,
    expiresAt: Date.now() + answer.expires_in * 1000,
  };
  clearTimeout(timer);
  const inMs = Math.max(5, answer.expires_in - REFRESH_MARGIN_S) * 1000;
  timer = setTimeout(() => refresh().catch(() => {}), inMs);
}

/** Whether the app holds tokens. */
export function signedIn() {
  return tokens !== null;
}

/** The current access token; throws when signed out. */
export function accessToken() {
  if (!tokens) throw new AuthError('signed_out', 'You are signed out.');
  return tokens.access;
}

/**
 * Gets a new access token with the refresh token (which rotates). Concurrent callers share one
 * request: a rotated token used twice would end the session. When the session is over, the app
 * is signed out.
 * @returns {Promise<void>}
 */
export function refresh() {
  if (refreshing) return refreshing;
  const current = tokens;
  if (!current?.refresh) {
    end('Your session has ended. Please sign in again.');
    return Promise.reject(new AuthError('signed_out', 'You are signed out.'));
  }
  const refreshToken = current.refresh;
  refreshing = tokenRequest({ grant_type: 'refresh_token', refresh_token: refreshToken, client_id: CLIENT_ID })
    .catch((e) => {
      if (e instanceof AuthError && e.code !== 'network') end('Your session has ended. Please sign in again.');
      throw e;
    })
    .finally(() => {
      refreshing = null;
    });
  return refreshing;
}

/** Signs out: revokes the session at the bank, then forgets the tokens. */
export async function signOut() {
  const refreshToken = tokens?.refresh ?? tokens?.access;
  if (refreshToken) {
    try {
      await fetch('/oauth2/revoke', {
        method: 'POST',
        body: new URLSearchParams({ token: refreshToken, client_id: CLIENT_ID }),
      });
    } catch {
      // Offline: the tokens are forgotten anyway and expire at the bank.
    }
  }
  end('You have signed out.');
}

/** @param {string} reason */
function end(reason) {
  const wasSignedIn = tokens !== null;
  tokens = null;
  clearTimeout(timer);
  if (wasSignedIn) for (const listener of signedOutListeners) listener(reason);
}

/**
 * Calls `listener` with a sentence for the customer when the app stops being signed in.
 * @param {(reason: string) => void} listener
 */
export function onSignedOut(listener) {
  signedOutListeners.add(listener);
}
