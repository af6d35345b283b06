// Signing in through the bank's own OAuth2 provider: authorization code with PKCE (S256) for the
// public client `bp-web`. Tokens live in this module's memory only — never in localStorage or
// sessionStorage — so a reload or a new tab signs in again. Only the PKCE verifier and the
// `state` value cross the redirect to the login pages, in sessionStorage, and are deleted when
// the code comes back. The tokens are bound to the page's DPoP key (dpop.js): every token request
// carries a proof of it. The access token is refreshed on the customer's activity only — when a
// request the customer makes finds it about to expire — never by a timer: the bank ends a session
// after a while without activity, and refreshing is not activity. Signing out revokes the session
// and forgets the key.

import * as dpop from './dpop.js';
import { base64url, randomText } from './dpop.js';

const CLIENT_ID = 'bp-web';
const SCOPE = 'openid profile accounts offline_access';
const PENDING_KEY = 'bp.signin';
/** A request of the customer's refreshes the access token when it expires within this many seconds. */
const REFRESH_MARGIN_S = 60;
/** What the customer reads when the bank ended the session for inactivity. */
export const INACTIVE_MESSAGE = 'You were signed out because you were inactive for a while. Please sign in again.';
/** What the customer reads when the session ended otherwise (revoked, expired, signed out elsewhere). */
const ENDED_MESSAGE = 'Your session has ended. Please sign in again.';

/**
 * @typedef {object} TokenResponse
 * @property {string} access_token
 * @property {string} token_type
 * @property {number} expires_in
 * @property {string} [refresh_token]
 * @property {string} scope
 */

/**
 * @typedef {{ access: string, scheme: 'DPoP' | 'Bearer', refresh: string | null, expiresAt: number, session: string }} Tokens
 */

/** An OAuth2 error answer (RFC 6749 §5.2), or no answer at all. */
export class AuthError extends Error {
  /**
   * @param {string} code the OAuth2 `error`, or `network`
   * @param {string} message
   * @param {string} [sessionEnded] why the bank ended the session (`inactivity`), when it says
   */
  constructor(code, message, sessionEnded) {
    super(message);
    this.code = code;
    this.sessionEnded = sessionEnded ?? '';
  }
}

/** @type {Tokens | null} */
let tokens = null;
/** @type {Promise<void> | null} */
let refreshing = null;
/** @type {Set<(reason: string) => void>} */
const signedOutListeners = new Set();

/** The redirect URI of this page: the server registers `/callback` of its own origin. */
export function redirectUri() {
  return `${location.origin}/callback`;
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
  // The session's key, which its tokens will be bound to.
  await dpop.newKey();
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
  let body;
  // A second try when the server asks for its nonce (the first answer carries it).
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      response = await fetch('/oauth2/token', {
        method: 'POST',
        headers: { dpop: await dpop.proof('POST', '/oauth2/token') },
        body: new URLSearchParams(form),
      });
    } catch {
      throw new AuthError('network', 'The bank cannot be reached. Check your connection and try again.');
    }
    body = await response.json().catch(() => ({}));
    if (!dpop.tookNonce(response, body)) break;
  }
  if (!response || !response.ok) {
    throw new AuthError(
      body.error ?? 'server_error',
      body.error_description ?? 'The sign-in service refused the request.',
      body.session_ended,
    );
  }
  const answer = /** @type {TokenResponse} */ (body);
  tokens = {
    access: answer.access_token,
    scheme: answer.token_type === 'DPoP' ? 'DPoP' : 'Bearer',
    session: sessionOf(answer.access_token),
    refresh: answer.refresh_token ?? tokens?.refresh ?? null,
    expiresAt: Date.now() + answer.expires_in * 1000,
  };
}

/**
 * The session id (`sid`) of an access token: security events name sessions by it.
 * @param {string} token
 */
function sessionOf(token) {
  try {
    const payload = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    return String(JSON.parse(atob(payload)).sid ?? '');
  } catch {
    return '';
  }
}

/** The session the app is signed in to (`''` when signed out). */
export function sessionId() {
  return tokens?.session ?? '';
}

/** Whether the access token has expired (by this device's clock). */
export function expired() {
  return !tokens || Date.now() >= tokens.expiresAt;
}

/**
 * For a request the customer makes: refreshes the access token first when it expires within
 * `REFRESH_MARGIN_S` (the only refreshes the app makes, besides a 401).
 */
export async function freshen() {
  if (tokens && Date.now() >= tokens.expiresAt - REFRESH_MARGIN_S * 1000) await refresh();
}

/** Whether the app holds tokens. */
export function signedIn() {
  return tokens !== null;
}

/**
 * The current access token and its scheme (`DPoP`: each request needs a proof); throws when
 * signed out.
 * @returns {{ token: string, scheme: 'DPoP' | 'Bearer' }}
 */
export function accessToken() {
  if (!tokens) throw new AuthError('signed_out', 'You are signed out.');
  return { token: tokens.access, scheme: tokens.scheme };
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
    end(ENDED_MESSAGE);
    return Promise.reject(new AuthError('signed_out', 'You are signed out.'));
  }
  const refreshToken = current.refresh;
  refreshing = tokenRequest({ grant_type: 'refresh_token', refresh_token: refreshToken, client_id: CLIENT_ID })
    .catch((e) => {
      if (e instanceof AuthError && e.code !== 'network') {
        end(e.sessionEnded === 'inactivity' ? INACTIVE_MESSAGE : ENDED_MESSAGE);
        throw new AuthError('signed_out', 'You are signed out.');
      }
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

/**
 * The bank ended the session (said by the API, the token endpoint or the event stream): forgets
 * the tokens and says why.
 * @param {'inactivity' | 'revoked'} why
 */
export function sessionEnded(why) {
  end(why === 'inactivity' ? INACTIVE_MESSAGE : ENDED_MESSAGE);
}

/** @param {string} reason */
function end(reason) {
  const wasSignedIn = tokens !== null;
  tokens = null;
  dpop.forgetKey();
  if (wasSignedIn) for (const listener of signedOutListeners) listener(reason);
}

/**
 * Calls `listener` with a sentence for the customer when the app stops being signed in.
 * @param {(reason: string) => void} listener
 */
export function onSignedOut(listener) {
  signedOutListeners.add(listener);
}
