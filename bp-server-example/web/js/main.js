// The web app's entry point: sign-in, the header (navigation, live indicator, sign-out), routing
// between the views (`#/overview`, `#/accounts/<id>`, `#/services`, `#/profile`, `#/security`), and the live
// stream that keeps balances and history current.

import * as api from './api.js';
import * as auth from './auth.js';
import { h, replace, byId } from './dom.js';
import { LiveStream } from './live.js';
import * as views from './views.js';

/** @type {views.Context | null} */
let ctx = null;
/** @type {views.View | null} */
let view = null;
/** @type {LiveStream | null} */
let live = null;

const main = byId('main');
const problemBanner = byId('problem');

const LIVE_LABELS = {
  connecting: 'Connecting…',
  live: 'Live',
  reconnecting: 'Reconnecting…',
  offline: 'Offline',
};

/**
 * Shows an error in plain words, with the problem type and request id for the support desk.
 * @param {unknown} error
 */
function showProblem(error) {
  if (error instanceof auth.AuthError && error.code === 'signed_out') return;
  // Signed out meanwhile (the landing page says why): the failures of what was under way are moot.
  if (!auth.signedIn()) return;
  const p =
    error instanceof api.ApiProblem
      ? error
      : new api.ApiProblem({ title: 'Something went wrong', detail: error instanceof Error ? error.message : String(error) });
  replace(
    problemBanner,
    h('p', {}, h('strong', {}, p.title), p.detail ? ` — ${p.detail}` : ''),
    h(
      'p',
      { class: 'support' },
      'For support: ',
      h('code', { 'data-problem-type': '' }, p.type),
      p.instance ? [' · request ', h('code', {}, p.instance)] : null,
    ),
    h('button', { type: 'button', class: 'secondary', onclick: () => clearProblem() }, 'Dismiss'),
  );
  problemBanner.hidden = false;
}

function clearProblem() {
  problemBanner.hidden = true;
  problemBanner.replaceChildren();
}

/**
 * @param {string} message
 */
function showLanding(message) {
  live?.stop();
  live = null;
  ctx = null;
  view = null;
  byId('nav').hidden = true;
  byId('session').hidden = true;
  document.title = 'Sign in — bp bank';
  const button = h('button', { type: 'button', id: 'sign-in' }, 'Sign in');
  button.addEventListener('click', () => {
    button.setAttribute('disabled', '');
    void auth.beginSignIn(location.hash.startsWith('#/') ? location.hash : '#/overview');
  });
  replace(
    main,
    h(
      'section',
      { class: 'landing card', 'aria-labelledby': 'landing-title' },
      h('h1', { id: 'landing-title' }, 'Your bank, live'),
      message ? h('p', { role: 'status' }, message) : null,
      h('p', {}, 'See your accounts, balances and history, updated the moment money moves.'),
      button,
    ),
  );
  button.focus();
}

/**
 * @param {import('./live.js').LiveState} state
 * @param {string} detail
 */
function setLiveState(state, detail) {
  const indicator = byId('live');
  indicator.dataset.state = state;
  const label = indicator.querySelector('.label');
  if (label) label.textContent = LIVE_LABELS[state];
  indicator.title = state === 'live' ? 'Balances update by themselves' : `Updates paused${detail ? `: ${detail}` : ''}`;
}

/** @param {import('./live.js').LedgerEvent} event */
function onLedgerEvent(event) {
  const account = ctx?.accounts.find((a) => a.id === event.account_id);
  // Events up to what the page already shows (a replay after reconnecting) change nothing.
  if (!account || event.seq <= account.last_event_seq) return;
  account.last_event_seq = event.seq;
  if (event.data.balances) account.balances = event.data.balances;
  view?.accountChanged?.(account, event);
}

/** Opens the view the address names. */
function route() {
  if (!ctx) return;
  const hash = location.hash || '#/overview';
  const [, name = 'overview', id] = hash.split('/');
  /** @type {views.View} */
  let next;
  let active = name;
  if (name === 'accounts' || name === 'transactions') {
    active = 'transactions';
    const account = ctx.accounts.find((a) => a.id === id) ?? ctx.accounts[0];
    if (!account) {
      next = views.overview(ctx);
      active = 'overview';
    } else {
      next = views.transactions(ctx, account);
    }
  } else if (name === 'services') {
    next = views.services(ctx);
  } else if (name === 'profile') {
    next = views.profile(ctx);
  } else if (name === 'security') {
    next = views.security(ctx);
  } else {
    active = 'overview';
    next = views.overview(ctx);
  }
  view = next;
  clearProblem();
  for (const link of document.querySelectorAll('#nav a')) {
    if (link instanceof HTMLElement && link.dataset.route === active) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
  document.title = `${next.title} — bp bank`;
  replace(main, next.root);
  main.focus({ preventScroll: true });
}

/** After sign-in: loads the customer and their accounts, opens the live stream and the view. */
async function start() {
  replace(main, h('p', { class: 'muted', role: 'status' }, 'Loading your accounts…'));
  /** @type {[views.Profile, { accounts: views.Account[] }]} */
  const [profile, list] = await Promise.all([api.get('/v1/me'), api.get('/v1/accounts')]);
  ctx = { profile, accounts: list.accounts, showProblem };
  byId('who').textContent = profile.display_name;
  byId('nav').hidden = false;
  byId('session').hidden = false;
  // The stream starts exactly after the balances just shown: each account's last event, in the
  // order of GET /v1/accounts.
  const cursor = `v1.${list.accounts.map((a) => a.last_event_seq).join('.')}`;
  live = new LiveStream({
    onLedgerEvent,
    onSecurityEvent: (kind, data) => {
      // This very session revoked (signed out elsewhere, or ended by the bank for inactivity).
      if (kind === 'session_revoked' && data.detail?.session === auth.sessionId()) {
        auth.sessionEnded(data.detail?.reason === 'inactivity' ? 'inactivity' : 'revoked');
      }
    },
    onServiceEvent: (event) => view?.serviceChanged?.(event),
    onState: setLiveState,
  });
  live.start(cursor);
  route();
}

async function boot() {
  auth.onSignedOut((reason) => showLanding(reason));
  byId('sign-out').addEventListener('click', () => void auth.signOut());
  window.addEventListener('hashchange', route);
  if (!auth.isCallback()) {
    showLanding('');
    return;
  }
  try {
    const returnTo = await auth.completeSignIn();
    history.replaceState(null, '', `/${returnTo}`);
    await start();
  } catch (e) {
    showLanding(e instanceof Error ? e.message : 'The sign-in did not complete.');
    if (e instanceof api.ApiProblem) showProblem(e);
  }
}

void boot();
