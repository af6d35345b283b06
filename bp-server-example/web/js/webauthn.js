// WebAuthn in the browser, for passkeys: the server's options (JSON, binary members base64url)
// turned into what navigator.credentials takes, and the credentials it returns turned back into
// JSON for the server. Used by the web app (registering a passkey) and by the sign-in page's
// script (signing in with one).

/**
 * @param {string} text base64url, padded or not
 * @returns {ArrayBuffer}
 */
export function fromB64url(text) {
  const b64 = text.replace(/-/g, '+').replace(/_/g, '/');
  const binary = atob(b64 + '='.repeat((4 - (b64.length % 4)) % 4));
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i += 1) bytes[i] = binary.charCodeAt(i);
  return bytes.buffer;
}

/**
 * @param {ArrayBuffer | ArrayBufferView | null | undefined} data
 * @returns {string | undefined}
 */
export function toB64url(data) {
  if (!data) return undefined;
  const bytes = data instanceof ArrayBuffer ? new Uint8Array(data) : new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  let binary = '';
  for (const b of bytes) binary += String.fromCharCode(b);
  return btoa(binary).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

/**
 * @param {{ id: string, type?: string, transports?: string[] }[] | undefined} list
 * @returns {PublicKeyCredentialDescriptor[] | undefined}
 */
function descriptors(list) {
  return list?.map((c) => ({ ...c, type: 'public-key', id: fromB64url(c.id), transports: /** @type {AuthenticatorTransport[] | undefined} */ (c.transports) }));
}

/**
 * The server's `{ publicKey }` creation options, for `navigator.credentials.create`.
 * @param {any} options
 * @returns {CredentialCreationOptions}
 */
export function creationOptions(options) {
  const pk = options.publicKey;
  return {
    publicKey: {
      ...pk,
      challenge: fromB64url(pk.challenge),
      user: { ...pk.user, id: fromB64url(pk.user.id) },
      excludeCredentials: descriptors(pk.excludeCredentials),
    },
  };
}

/**
 * The server's `{ publicKey }` request options, for `navigator.credentials.get`.
 * @param {any} options
 * @returns {CredentialRequestOptions}
 */
export function requestOptions(options) {
  const pk = options.publicKey;
  return { publicKey: { ...pk, challenge: fromB64url(pk.challenge), allowCredentials: descriptors(pk.allowCredentials) } };
}

/**
 * A credential from `navigator.credentials.create` or `.get` as the server reads it (WebAuthn's
 * RegistrationResponseJSON / AuthenticationResponseJSON).
 * @param {Credential | null} credential
 */
export function credentialJSON(credential) {
  if (!(credential instanceof PublicKeyCredential)) throw new Error('The browser returned no passkey.');
  const r = credential.response;
  /** @type {Record<string, string | undefined>} */
  const response = { clientDataJSON: toB64url(r.clientDataJSON) };
  if (r instanceof AuthenticatorAttestationResponse) {
    response.attestationObject = toB64url(r.attestationObject);
  } else if (r instanceof AuthenticatorAssertionResponse) {
    response.authenticatorData = toB64url(r.authenticatorData);
    response.signature = toB64url(r.signature);
    response.userHandle = toB64url(r.userHandle);
  }
  return {
    id: credential.id,
    rawId: toB64url(credential.rawId),
    type: credential.type,
    response,
    extensions: credential.getClientExtensionResults(),
  };
}

/**
 * Words for a failed `navigator.credentials` call.
 * @param {unknown} error
 */
export function failureText(error) {
  const name = error instanceof Error ? error.name : '';
  if (name === 'NotAllowedError') return 'The passkey request was cancelled, timed out, or no passkey of this site was available.';
  if (name === 'InvalidStateError') return 'This authenticator already holds a passkey for you here.';
  if (name === 'SecurityError') return 'Passkeys cannot be used at this address: open the bank at its own site name.';
  if (name === 'NotSupportedError') return 'This browser or authenticator cannot make a passkey.';
  return error instanceof Error ? error.message : String(error);
}
