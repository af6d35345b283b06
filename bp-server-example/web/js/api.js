// The bank's API, for the views: JSON over fetch with the access token — bound to the page's
// key, so each request carries a fresh DPoP proof — and RFC 9457 problems as errors. A 401 asking
// for the server's DPoP nonce is retried once with it; another 401 refreshes the token once and
// retries (for the customer's own requests: background ones never refresh).

import * as auth from './auth.js';
import * as dpop from './dpop.js';

/** An RFC 9457 problem from the API, or one made here when the API cannot be reached. */
export class ApiProblem extends Error {
  /**
   * @param {{ type?: string, title?: string, status?: number, detail?: string, instance?: string }} problem
   */
  constructor(problem) {
    super(problem.detail ?? problem.title ?? 'The request failed.');
    this.type = problem.type ?? 'about:blank';
    this.title = problem.title ?? 'Something went wrong';
    this.status = problem.status ?? 0;
    this.detail = problem.detail ?? '';
    this.instance = problem.instance ?? '';
  }
}

/** The problem `type` of an API that could not be reached (made by this app, not the server). */
export const NETWORK_PROBLEM = 'urn:bp:web:network';
/**
 * The problem `type` of a background request that waits for the customer (made by this app): the
 * access token has expired, and only the customer's activity may refresh it.
 */
export const PAUSED_PROBLEM = 'urn:bp:web:paused';
/** The server's problem `type` of a session it ended for inactivity. */
export const INACTIVE_PROBLEM = 'urn:bp:problem:session-inactive';
/** The server's problem `type` of a request that needs a more recent sign-in (RFC 9470). */
export const STEP_UP_PROBLEM = 'urn:bp:problem:insufficient-user-authentication';

/** What to do at the customer's next request (background work that waited for a fresh token). */
/** @type {Set<() => void>} */
const whenActiveCallbacks = new Set();

/**
 * Runs `callback` after the customer's next successful request.
 * @param {() => void} callback
 */
export function whenActive(callback) {
  whenActiveCallbacks.add(callback);
}

/**
 * @param {string} method
 * @param {string} path
 * @param {unknown} body
 * @param {boolean} background
 */
async function send(method, path, body, background) {
  const { token, scheme } = auth.accessToken();
  /** @type {Record<string, string>} */
  const headers = { authorization: `${scheme} ${token}`, accept: 'application/json' };
  if (scheme === 'DPoP') headers.dpop = await dpop.proof(method, path, token);
  // Not the customer's doing: the bank does not count it as activity.
  if (background) headers['bp-activity'] = 'background';
  /** @type {RequestInit} */
  const init = { method, headers };
  if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers = { ...init.headers, 'content-type': 'application/json' };
  }
  try {
    return await fetch(path, init);
  } catch {
    throw new ApiProblem({
      type: NETWORK_PROBLEM,
      title: 'The bank cannot be reached',
      detail: 'Check your connection; the page retries by itself.',
    });
  }
}

/**
 * Calls the API and returns its JSON; throws an {@link ApiProblem} on any error answer.
 *
 * A request the customer makes (the default) is their activity: it refreshes the token first
 * when it is about to expire, and once more after a 401. A `background` request (the app's own
 * follow-up: a stream ticket, a list reloaded after a live event) is marked so for the bank and
 * never refreshes; with an expired token it fails with {@link PAUSED_PROBLEM} at once. A session
 * the bank ended for inactivity signs the app out, saying why.
 * @template T
 * @param {string} method
 * @param {string} path
 * @param {unknown} [body]
 * @param {{ background?: boolean }} [options]
 * @returns {Promise<T>}
 */
export async function call(method, path, body, { background = false } = {}) {
  if (background && auth.expired()) {
    throw new ApiProblem({ type: PAUSED_PROBLEM, title: 'Waiting for you', detail: 'Updates resume when you use the app.' });
  }
  if (!background) await auth.freshen();
  let response = await send(method, path, body, background);
  if (dpop.tookNonce(response)) response = await send(method, path, body, background);
  if (response.status === 401) {
    const problem = await response.clone().json().catch(() => ({}));
    if (problem.type === INACTIVE_PROBLEM) {
      auth.sessionEnded('inactivity');
    } else if (!background && problem.type !== STEP_UP_PROBLEM) {
      // A refreshed token keeps the sign-in's time: it cannot answer a step-up.
      await auth.refresh();
      response = await send(method, path, body, background);
    }
  }
  if (response.ok) {
    if (!background) {
      const waiting = [...whenActiveCallbacks];
      whenActiveCallbacks.clear();
      for (const callback of waiting) callback();
    }
    if (response.status === 204) return /** @type {T} */ (/** @type {unknown} */ (undefined));
    return /** @type {Promise<T>} */ (response.json());
  }
  const problem = await response.json().catch(() => ({}));
  throw new ApiProblem({ status: response.status, title: response.statusText, ...problem });
}

/**
 * @template T
 * @param {string} path
 * @param {{ background?: boolean }} [options]
 * @returns {Promise<T>}
 */
export function get(path, options) {
  return call('GET', path, undefined, options);
}
