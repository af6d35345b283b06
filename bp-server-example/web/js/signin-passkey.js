// The sign-in page's "Sign in with a passkey" (the page is the server's, /oauth2/authorize; this
// file is served as the web app's so that it can share webauthn.js, and the page's content
// security policy needs no inline script). Username first: options bound to this sign-in page
// (its tx and cookie), the browser's passkey prompt, then the assertion posted as a form, whose
// answer is the usual redirect to the application or the page again with a message.

import { credentialJSON, failureText, requestOptions } from './webauthn.js';

const button = document.getElementById('passkey-button');
const form = document.getElementById('passkey-form');
const status = document.getElementById('passkey-status');
const username = document.getElementById('username');

/** @param {string} text */
function say(text) {
  if (status) status.textContent = text;
}

async function signIn() {
  if (!(form instanceof HTMLFormElement) || !(username instanceof HTMLInputElement)) return;
  const name = username.value.trim();
  if (!name) {
    say('Enter your username first, then choose Sign in with a passkey.');
    username.focus();
    return;
  }
  const tx = new FormData(form).get('tx');
  say('Waiting for your passkey…');
  const answer = await fetch('/oauth2/login/passkey/options', {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json' },
    body: new URLSearchParams({ tx: String(tx ?? ''), username: name }),
    credentials: 'same-origin',
  });
  if (!answer.ok) {
    const problem = await answer.json().catch(() => null);
    say(problem?.detail ?? 'This sign-in page has expired. Go back to the application and start again.');
    return;
  }
  let credential;
  try {
    credential = await navigator.credentials.get(requestOptions(await answer.json()));
  } catch (e) {
    say(failureText(e));
    return;
  }
  const field = form.elements.namedItem('credential');
  if (field instanceof HTMLInputElement) field.value = JSON.stringify(credentialJSON(credential));
  form.submit();
}

if (button instanceof HTMLButtonElement && 'PublicKeyCredential' in window) {
  button.hidden = false;
  button.addEventListener('click', () => {
    button.disabled = true;
    signIn()
      .catch((e) => say(failureText(e)))
      .finally(() => {
        button.disabled = false;
      });
  });
}
