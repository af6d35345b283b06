// DPoP (RFC 9449): the key this page's session is bound to, and the proofs it signs with it.
// The bank binds the app's tokens to the key, so a token that leaks (a log, a proxy, a browser
// extension reading requests) is useless without it. The key is an ECDSA P-256 WebCrypto key
// made at sign-in, non-extractable — the page can sign with it but never read it out — and kept
// in this module's memory only, like the tokens: it lives as long as the page, and a reload signs
// in again with a new key. (IndexedDB could keep it across reloads, but there are no tokens left
// to use it with then, and a stored key is one more thing a later script of the origin could
// use.) Every token request and every API call carries a fresh proof; the server's nonce
// (`DPoP-Nonce`) is kept and sent once it asks for one.

/** @type {CryptoKeyPair | null} */
let keys = null;
/** @type {{ kty: string, crv: string, x: string, y: string } | null} */
let publicJwk = null;
/** The server's latest nonce, sent in every proof once the server has given one. */
let nonce = '';

/** @param {Uint8Array} data */
export function base64url(data) {
  let text = '';
  for (const byte of data) text += String.fromCharCode(byte);
  return btoa(text).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

/** @param {number} bytes */
export function randomText(bytes) {
  return base64url(crypto.getRandomValues(new Uint8Array(bytes)));
}

/** @param {unknown} value */
function encodeJson(value) {
  return base64url(new TextEncoder().encode(JSON.stringify(value)));
}

/** Makes the session's key (at sign-in), forgetting any earlier one and its nonce. */
export async function newKey() {
  const pair = await crypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, false, ['sign']);
  const jwk = await crypto.subtle.exportKey('jwk', pair.publicKey);
  publicJwk = { kty: jwk.kty ?? 'EC', crv: jwk.crv ?? 'P-256', x: jwk.x ?? '', y: jwk.y ?? '' };
  keys = pair;
  nonce = '';
}

/** Forgets the key (sign-out): the session's tokens cannot be used any more, even by this page. */
export function forgetKey() {
  keys = null;
  publicJwk = null;
  nonce = '';
}

/** Whether the page holds a key. */
export function hasKey() {
  return keys !== null;
}

/**
 * A proof for a request with `method` to `path` (of this origin, which is the bank's public URL),
 * for `accessToken` when it goes with one.
 * @param {string} method
 * @param {string} path
 * @param {string} [accessToken]
 * @returns {Promise<string>}
 */
export async function proof(method, path, accessToken) {
  if (!keys || !publicJwk) throw new Error('This page has no key to prove the session with.');
  const url = new URL(path, location.origin);
  /** @type {Record<string, string | number>} */
  const claims = { jti: randomText(16), htm: method, htu: `${url.origin}${url.pathname}`, iat: Math.floor(Date.now() / 1000) };
  if (accessToken) {
    claims.ath = base64url(new Uint8Array(await crypto.subtle.digest('SHA-256', new TextEncoder().encode(accessToken))));
  }
  if (nonce) claims.nonce = nonce;
  const signed = `${encodeJson({ typ: 'dpop+jwt', alg: 'ES256', jwk: publicJwk })}.${encodeJson(claims)}`;
  // WebCrypto's ECDSA signature is r‖s, which is what JWS's ES256 wants.
  const signature = await crypto.subtle.sign({ name: 'ECDSA', hash: 'SHA-256' }, keys.privateKey, new TextEncoder().encode(signed));
  return `${signed}.${base64url(new Uint8Array(signature))}`;
}

/**
 * Keeps the nonce a response carries (`DPoP-Nonce`); true when the response refused the request
 * for want of it (`use_dpop_nonce`), so that the caller retries once with a new proof.
 * @param {Response} response
 * @param {{ error?: string } | null} [oauthError] the token endpoint's JSON error, if any
 */
export function tookNonce(response, oauthError) {
  const given = response.headers.get('dpop-nonce');
  if (given) nonce = given;
  const asked =
    (response.status === 401 && /error="use_dpop_nonce"/.test(response.headers.get('www-authenticate') ?? '')) ||
    (response.status === 400 && oauthError?.error === 'use_dpop_nonce');
  return Boolean(given) && asked;
}
