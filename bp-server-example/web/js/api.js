// The bank's API, for the views: JSON over fetch with the access token, RFC 9457 problems as
// errors. A 401 refreshes the token once and retries.

import * as auth from './auth.js';

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
 * @param {string} method
 * @param {string} path
 * @param {unknown} [body]
 */
async function send(method, path, body) {
  /** @type {RequestInit} */
  const init = {
    method,
    headers: { authorization: `Bearer ${auth.accessToken()}`, accept: 'application/json' },
  };
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
 * @template T
 * @param {string} method
 * @param {string} path
 * @param {unknown} [body]
 * @returns {Promise<T>}
 */
export async function call(method, path, body) {
  let response = await send(method, path, body);
  if (response.status === 401) {
    await auth.refresh();
    response = await send(method, path, body);
  }
  if (response.ok) return /** @type {Promise<T>} */ (response.json());
  const problem = await response.json().catch(() => ({}));
  throw new ApiProblem({ status: response.status, title: response.statusText, ...problem });
}

/**
 * @template T
 * @param {string} path
 * @returns {Promise<T>}
 */
export function get(path) {
  return call('GET', path);
}
