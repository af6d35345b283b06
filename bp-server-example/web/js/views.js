// The views: overview (FR1), an account's transactions (FR2), services (FR3), the read-only
// profile, and security (the customer's passkeys). Each renders into the page's <main> and may react to live ledger events.

import * as api from './api.js';
import { h, replace, flash } from './dom.js';
import * as fmt from './format.js';
import { creationOptions, credentialJSON, failureText } from './webauthn.js';

/** @typedef {import('./format.js').Money} Money */
/** @typedef {{ posted: Money, held: Money, available: Money }} Balances */

/**
 * @typedef {object} Account
 * @property {string} id
 * @property {string} number
 * @property {string} currency
 * @property {string} kind
 * @property {string} status
 * @property {Balances} balances
 * @property {number} last_event_seq
 */

/**
 * @typedef {object} Profile
 * @property {string} username
 * @property {string} display_name
 * @property {{ type: 'person', given_name: string, family_name: string, date_of_birth?: string }
 *   | { type: 'legal_entity', legal_name: string, tax_id: string, legal_representative: string,
 *       incorporation?: { country: string, date?: string, registry_number?: string } }} party
 * @property {{ kind: string, number_masked: string, issuing_country: string, expires_on?: string }[]} documents
 * @property {{ email?: string, phone?: string, address?: string }} contact
 * @property {{ status: string }} biometric
 * @property {string} kyc
 */

/**
 * @typedef {object} Transaction
 * @property {number} seq
 * @property {string} transfer_id
 * @property {string} kind
 * @property {'debit' | 'credit'} direction
 * @property {Money} amount
 * @property {Money} balance_after
 * @property {string} [reference]
 * @property {string} posted_at
 */

/**
 * @typedef {object} Transfer
 * @property {string} id
 * @property {string} kind
 * @property {string} state
 * @property {Money} amount
 * @property {string} [reference]
 * @property {string} created_at
 */

/**
 * @typedef {object} ServiceRecord
 * @property {string} id
 * @property {string} kind
 * @property {string} status
 * @property {Money} amount
 * @property {string} created_at
 * @property {string} updated_at
 * @property {ServiceDetails} [details]
 */

/**
 * What the list reads of a record's details: an external payment's payee, an international
 * payment's quote, a loan's purpose and schedule.
 * @typedef {object} ServiceDetails
 * @property {{ iban?: string, name?: string }} [creditor]
 * @property {{ source: Money, fee: Money, debit: Money, rate: string, target: Money }} [quote]
 * @property {string} [purpose]
 * @property {Money} [outstanding]
 * @property {{ number: number, due_on: string, principal: Money, interest: Money, total: Money, state: string, paid_on?: string }[]} [schedule]
 */

/**
 * Whom a service pays, as the list shows it: the payee's name and the IBAN's country and last
 * four characters (the rest stays in the record).
 * @param {ServiceRecord} s
 */
function servicePayee(s) {
  if (s.kind === 'loan') return s.details?.purpose ?? '—';
  const c = s.details?.creditor;
  if (!c?.name) return '—';
  const iban = (c.iban ?? '').replace(/\s+/g, '');
  return iban.length > 8 ? `${c.name} · ${iban.slice(0, 2)} … ${iban.slice(-4)}` : c.name;
}

/**
 * A service's amount as the list shows it: an international payment's debit and what arrives,
 * with the rate and the fee; otherwise its amount.
 * @param {ServiceRecord} s
 */
function serviceAmount(s) {
  const q = s.details?.quote;
  if (s.kind !== 'international_transfer' || !q) return fmt.money(s.amount);
  return h('span', { 'data-fx': '' },
    h('span', { 'data-debit': '' }, fmt.money(q.debit)), ' → ', h('span', { 'data-target': '' }, fmt.money(q.target)),
    h('br'), h('small', { class: 'muted' }, `at ${q.rate}, fee ${fmt.money(q.fee)}`));
}

/**
 * A loan's schedule: every instalment, paid or due (overdue once its date has passed).
 * @param {ServiceRecord} s
 */
function loanSchedule(s) {
  const schedule = s.details?.schedule ?? [];
  if (schedule.length === 0) return null;
  const today = new Date().toISOString().slice(0, 10);
  const state = (/** @type {{ state: string, due_on: string }} */ i) =>
    i.state === 'paid' ? 'paid' : i.due_on < today ? 'overdue' : 'due';
  return h('details', { 'data-schedule': s.id },
    h('summary', {}, `Schedule: ${schedule.filter((i) => i.state === 'paid').length} of ${schedule.length} paid`,
      s.details?.outstanding ? `, ${fmt.money(s.details.outstanding)} outstanding` : ''),
    h('table', { class: 'schedule' },
      h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, '#'), h('th', { scope: 'col' }, 'Due'),
        h('th', { scope: 'col', class: 'amount' }, 'Principal'), h('th', { scope: 'col', class: 'amount' }, 'Interest'),
        h('th', { scope: 'col', class: 'amount' }, 'Instalment'), h('th', { scope: 'col' }, 'State'))),
      h('tbody', {}, schedule.map((i) => h('tr', { 'data-instalment': String(i.number), 'data-state': state(i) },
        h('td', {}, String(i.number)), h('td', {}, fmt.day(i.due_on)),
        h('td', { class: 'amount' }, fmt.money(i.principal)), h('td', { class: 'amount' }, fmt.money(i.interest)),
        h('td', { class: 'amount' }, fmt.money(i.total)),
        h('td', {}, h('span', { class: 'badge' }, state(i) === 'paid' && i.paid_on ? `Paid ${fmt.day(i.paid_on)}` : fmt.words(state(i)))))))));
}

/**
 * What the views share: the signed-in customer, their accounts (kept current by the live
 * stream) and the page's problem banner.
 * @typedef {object} Context
 * @property {Profile} profile
 * @property {Account[]} accounts
 * @property {(error: unknown) => void} showProblem
 */

/**
 * A rendered view. `accountChanged` is called after a live event changed an account's balances,
 * `serviceChanged` after one changed an external service request's status.
 * @typedef {object} View
 * @property {string} title
 * @property {HTMLElement} root
 * @property {(account: Account, event: import('./live.js').LedgerEvent) => void} [accountChanged]
 * @property {(event: import('./live.js').ServiceEvent) => void} [serviceChanged]
 */

/** @param {Account} account */
function accountName(account) {
  return `${account.currency} ${fmt.words(account.kind).toLowerCase()} account`;
}

// ---------------------------------------------------------------------------------------------
// Overview (FR1)

/**
 * @param {Context} ctx
 * @returns {View}
 */
export function overview(ctx) {
  const { profile, accounts } = ctx;
  /** @type {Map<string, { posted: HTMLElement, available: HTMLElement, held: HTMLElement }>} */
  const cells = new Map();
  const cards = accounts.map((account) => {
    const posted = h('dd', { class: 'posted', 'data-balance': 'posted' }, fmt.money(account.balances.posted));
    const available = h('dd', { 'data-balance': 'available' }, fmt.money(account.balances.available));
    const held = h('dd', { 'data-balance': 'held' }, fmt.money(account.balances.held));
    cells.set(account.id, { posted, available, held });
    const headingId = `account-${account.id}`;
    return h(
      'li',
      { class: 'card account', 'data-account': account.id, 'aria-labelledby': headingId },
      h('h2', { id: headingId }, accountName(account)),
      h('div', { class: 'number' }, h('span', { class: 'muted' }, 'No. '), fmt.accountNumber(account.number)),
      h(
        'dl',
        {},
        h('dt', {}, 'Balance'),
        posted,
        h('dt', {}, 'Available'),
        available,
        h('dt', {}, 'On hold'),
        held,
      ),
      account.status === 'active' ? null : h('p', { class: 'muted' }, `Status: ${fmt.words(account.status)}`),
      h('a', { href: `#/accounts/${account.id}`, class: 'button', 'aria-label': `Transactions of the ${accountName(account)}` }, 'Transactions'),
    );
  });
  const root = h(
    'section',
    { 'aria-labelledby': 'overview-title' },
    h('h1', { id: 'overview-title' }, `Hello, ${profile.display_name}`),
    h('p', { class: 'sub' }, 'Signed in as ', h('strong', { 'data-username': '' }, profile.username)),
    accounts.length
      ? h('ul', { class: 'accounts', 'aria-label': 'Your accounts' }, cards)
      : h('p', { class: 'empty' }, 'You have no accounts yet.'),
  );
  return {
    title: 'Overview',
    root,
    accountChanged(account) {
      const c = cells.get(account.id);
      if (!c) return;
      for (const which of /** @type {const} */ (['posted', 'available', 'held'])) {
        const text = fmt.money(account.balances[which]);
        if (c[which].textContent !== text) {
          c[which].textContent = text;
          flash(c[which]);
        }
      }
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Transactions (FR2)

const PAGE = 25;

/**
 * The filter form's values, as the API's query parameters.
 * @param {HTMLFormElement} form
 * @returns {URLSearchParams}
 */
function filterQuery(form) {
  const data = new FormData(form);
  const query = new URLSearchParams();
  const text = (/** @type {string} */ name) => String(data.get(name) ?? '').trim();
  const from = text('from');
  const to = text('to');
  // Dates are the customer's local days: from the start of `from` to the end of `to`.
  if (from) query.set('from', localMidnight(from, 0));
  if (to) query.set('to', localMidnight(to, 1));
  for (const name of ['direction', 'kind']) if (text(name)) query.set(name, text(name));
  // Amounts go to the API as typed (a decimal string); it answers a clear problem if malformed.
  for (const name of ['amount_min', 'amount_max']) if (text(name)) query.set(name, text(name).replace(',', '.'));
  return query;
}

/**
 * @param {string} isoDate `YYYY-MM-DD`
 * @param {number} plusDays
 */
function localMidnight(isoDate, plusDays) {
  const [y, m, d] = isoDate.split('-').map(Number);
  return new Date(y, m - 1, d + plusDays).toISOString();
}

let fieldIds = 0;

/**
 * A form field: its label (named by the label's text alone) above the control.
 * @param {string} label
 * @param {HTMLInputElement | HTMLSelectElement} control
 * @param {string} [cls]
 */
function field(label, control, cls) {
  control.id = `field-${++fieldIds}`;
  return h('div', { class: cls ? `field ${cls}` : 'field' }, h('label', { for: control.id }, label), control);
}

/**
 * @param {Context} ctx
 * @param {Account} account
 * @returns {View}
 */
export function transactions(ctx, account) {
  /** @type {Transaction[]} newest first */
  let rows = [];
  const seen = new Set();
  /** @type {string | null} */
  let next = null;
  /** @type {Transfer[]} */
  let pending = [];
  let generation = 0;

  const tbody = h('tbody', {});
  const status = h('p', { class: 'muted', role: 'status', 'aria-live': 'polite' });
  const more = h('button', { type: 'button', class: 'secondary', hidden: true }, 'Load more');
  const switcher =
    ctx.accounts.length > 1
      ? field(
          'Account',
          h(
            'select',
            {
              name: 'account',
              onchange: (e) => {
                location.hash = `#/accounts/${/** @type {HTMLSelectElement} */ (e.target).value}`;
              },
            },
            ctx.accounts.map((a) =>
              h('option', { value: a.id, selected: a.id === account.id }, `${accountName(a)} · ${fmt.accountNumber(a.number)}`),
            ),
          ),
          'wide',
        )
      : null;
  const form = h(
    'form',
    { class: 'filters card', 'aria-label': 'Filter transactions' },
    switcher,
    field('From', h('input', { type: 'date', name: 'from' })),
    field('To', h('input', { type: 'date', name: 'to' })),
    field(
      'Direction',
      h(
        'select',
        { name: 'direction' },
        h('option', { value: '' }, 'In and out'),
        h('option', { value: 'credit' }, 'Money in'),
        h('option', { value: 'debit' }, 'Money out'),
      ),
    ),
    field(
      'Kind',
      h(
        'select',
        { name: 'kind' },
        h('option', { value: '' }, 'Any kind'),
        fmt.TRANSFER_KINDS.map((k) => h('option', { value: k }, fmt.kind(k))),
      ),
    ),
    field(`Min amount (${account.currency})`, h('input', { name: 'amount_min', inputmode: 'decimal', autocomplete: 'off' })),
    field(`Max amount (${account.currency})`, h('input', { name: 'amount_max', inputmode: 'decimal', autocomplete: 'off' })),
    h(
      'div',
      { class: 'actions' },
      h('button', { type: 'submit' }, 'Apply'),
      h('button', { type: 'reset', class: 'secondary' }, 'Clear'),
    ),
  );

  /** @param {Transfer} t */
  const pendingRow = (t) =>
    h(
      'tr',
      { class: 'pending', 'data-transfer': t.id, 'data-state': 'pending' },
      h('td', { class: 'when' }, fmt.when(t.created_at)),
      h('td', {}, h('span', { class: 'badge' }, 'Pending'), ' ', t.reference ?? fmt.kind(t.kind), h('br'),
        h('span', { class: 'muted' }, 'Waiting for your confirmation in the app')),
      h('td', { class: 'amount debit' }, fmt.signedMoney(t.amount, 'debit')),
      h('td', { class: 'amount muted' }, 'on hold'),
    );

  /** @param {Transaction} t */
  const row = (t) =>
    h(
      'tr',
      { 'data-seq': t.seq, 'data-transfer': t.transfer_id, 'data-state': 'posted' },
      h('td', { class: 'when' }, fmt.when(t.posted_at)),
      h('td', {}, t.reference ?? fmt.kind(t.kind), t.reference ? h('span', { class: 'muted' }, ` · ${fmt.kind(t.kind)}`) : null),
      h('td', { class: `amount ${t.direction}` }, fmt.signedMoney(t.amount, t.direction)),
      h('td', { class: 'amount' }, fmt.money(t.balance_after)),
    );

  /** @param {Set<number>} [fresh] seqs to highlight */
  const render = (fresh) => {
    const lines = [...pending.map(pendingRow), ...rows.map((t) => {
      const tr = row(t);
      if (fresh?.has(t.seq)) flash(tr);
      return tr;
    })];
    replace(tbody, lines.length ? lines : h('tr', {}, h('td', { colspan: 4, class: 'muted' }, 'No transactions match.')));
    more.hidden = next === null;
    status.textContent = `${rows.length} ${rows.length === 1 ? 'transaction' : 'transactions'} shown${next ? '; more are older' : ''}.`;
  };

  const base = `/v1/accounts/${encodeURIComponent(account.id)}`;
  /** The filters of the rows shown: those of the last Apply, not what is typed since. */
  let applied = new URLSearchParams();

  /**
   * A page of the history with the filters last applied, from `cursor` (the newest when absent);
   * `background` when the app asks by itself (after a live event), not the customer.
   * @param {string} [cursor]
   * @param {boolean} [background]
   * @returns {Promise<{ items: Transaction[], next_cursor?: string }>}
   */
  const page = (cursor, background = false) => {
    const query = new URLSearchParams(applied);
    query.set('limit', String(PAGE));
    if (cursor) query.set('cursor', cursor);
    return api.get(`${base}/transactions?${query}`, { background });
  };

  /**
   * The payments this account makes that wait for SCA, newest first (the API lists them oldest
   * first).
   * @param {boolean} [background]
   * @returns {Promise<Transfer[]>}
   */
  const pendingNewestFirst = async (background = false) => {
    /** @type {{ transfers: Transfer[] }} */
    const held = await api.get(`${base}/pending`, { background });
    return held.transfers.slice().reverse();
  };

  /** Reloads from the newest line with the form's filters. */
  const load = async () => {
    const mine = ++generation;
    applied = filterQuery(form);
    status.textContent = 'Loading…';
    try {
      const [history, held] = await Promise.all([page(), pendingNewestFirst()]);
      if (mine !== generation) return;
      rows = history.items;
      seen.clear();
      for (const t of rows) seen.add(t.seq);
      next = history.next_cursor ?? null;
      pending = held;
      render();
    } catch (e) {
      status.textContent = 'The transactions could not be loaded.';
      ctx.showProblem(e);
    }
  };

  /** Appends the next (older) page. */
  const loadMore = async () => {
    if (!next) return;
    const mine = generation;
    more.setAttribute('disabled', '');
    try {
      const older = await page(next);
      if (mine !== generation) return;
      for (const t of older.items) {
        if (!seen.has(t.seq)) {
          seen.add(t.seq);
          rows.push(t);
        }
      }
      next = older.next_cursor ?? null;
      render();
    } catch (e) {
      ctx.showProblem(e);
    } finally {
      more.removeAttribute('disabled');
    }
  };

  /**
   * Fetches the lines newer than those shown (after a live event), page by page until a known
   * line, and puts them on top; and the pending list, which the event may have changed.
   */
  const catchUpOnce = async () => {
    const mine = generation;
    /** @type {Transaction[]} */
    const fresh = [];
    try {
      /** @type {string | undefined} */
      let cursor;
      for (let pages = 0; pages < 40; pages++) {
        const newer = await page(cursor, true);
        const unseen = newer.items.filter((t) => !seen.has(t.seq));
        fresh.push(...unseen);
        if (unseen.length < newer.items.length || !newer.next_cursor) break;
        cursor = newer.next_cursor;
      }
      const held = await pendingNewestFirst(true);
      if (mine !== generation) return;
      // `seen` may have grown meanwhile (a page loaded by "Load more"): keep each line once.
      const added = fresh.filter((t) => !seen.has(t.seq));
      for (const t of added) seen.add(t.seq);
      rows = [...added, ...rows].sort((a, b) => b.seq - a.seq);
      pending = held;
      render(new Set(added.map((t) => t.seq)));
    } catch (e) {
      // Waiting for the customer (an expired token only their activity may refresh): catch up
      // after their next request.
      if (e instanceof api.ApiProblem && e.type === api.PAUSED_PROBLEM) api.whenActive(() => catchUp());
      else ctx.showProblem(e);
    }
  };

  /** @type {Promise<void> | null} */
  let catching = null;
  let again = false;
  /** One catch-up at a time; events during one ask for one more after it. */
  const catchUp = () => {
    if (catching) {
      again = true;
      return;
    }
    catching = (async () => {
      do {
        again = false;
        await catchUpOnce();
      } while (again);
      catching = null;
    })();
  };

  form.addEventListener('submit', (e) => {
    e.preventDefault();
    void load();
  });
  form.addEventListener('reset', () => setTimeout(() => void load(), 0));
  more.addEventListener('click', () => void loadMore());

  const balance = h('p', { class: 'sub' },
    fmt.accountNumber(account.number), ' · Balance ', h('strong', { 'data-balance': 'posted' }, fmt.money(account.balances.posted)),
    ' · Available ', h('span', { 'data-balance': 'available' }, fmt.money(account.balances.available)));

  const root = h(
    'section',
    { 'aria-labelledby': 'history-title', 'data-account': account.id },
    h('h1', { id: 'history-title' }, `Transactions — ${accountName(account)}`),
    balance,
    form,
    status,
    h(
      'table',
      { class: 'history' },
      h('caption', {}, 'Newest first. Pending payments hold money until they are confirmed or expire.'),
      h(
        'thead',
        {},
        h(
          'tr',
          {},
          h('th', { scope: 'col' }, 'Date'),
          h('th', { scope: 'col' }, 'Description'),
          h('th', { scope: 'col', class: 'amount' }, 'Amount'),
          h('th', { scope: 'col', class: 'amount' }, 'Balance after'),
        ),
      ),
      tbody,
    ),
    h('div', { class: 'more' }, more),
  );
  void load();
  return {
    title: 'Transactions',
    root,
    accountChanged(changed) {
      if (changed.id !== account.id) return;
      for (const which of /** @type {const} */ (['posted', 'available'])) {
        const el = balance.querySelector(`[data-balance="${which}"]`);
        const text = fmt.money(changed.balances[which]);
        if (el && el.textContent !== text) {
          el.textContent = text;
          flash(el);
        }
      }
      catchUp();
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Services (FR3)

const SERVICE_KINDS = /** @type {Record<string, string>} */ ({
  interbank_transfer: 'Interbank transfer',
  international_transfer: 'International transfer',
  loan: 'Loan',
});

/**
 * @param {Context} ctx
 * @returns {View}
 */
export function services(ctx) {
  const body = h('div', {}, h('p', { class: 'muted', role: 'status' }, 'Loading…'));
  const root = h('section', { 'aria-labelledby': 'services-title' }, h('h1', { id: 'services-title' }, 'Services'),
    h('p', { class: 'sub' }, 'Interbank transfers, international transfers and loans.'), body);
  // Loads the list; a live change while a load runs asks for one more load after it, so the
  // view ends with the latest state and never runs two loads at once.
  let loading = false;
  let again = false;
  const load = () => {
    if (loading) {
      again = true;
      return;
    }
    loading = true;
    /** @type {Promise<{ services: ServiceRecord[], external_services_connected: boolean }>} */
    const request = api.get('/v1/services');
    request.then(show).catch((e) => {
      replace(body, h('p', { class: 'muted' }, 'The services could not be loaded.'));
      ctx.showProblem(e);
    }).finally(() => {
      loading = false;
      if (again) {
        again = false;
        load();
      }
    });
  };
  /** @param {{ services: ServiceRecord[], external_services_connected: boolean }} list */
  const show = (list) => {
    if (!list.external_services_connected) {
      replace(body, h('p', { class: 'empty', 'data-empty': 'not-connected' },
        'This bank has not connected its interbank, international and loan services yet, so there is no history of them to show. ',
        'Payments between accounts of this bank are under Transactions.'));
    } else if (list.services.length === 0) {
      replace(body, h('p', { class: 'empty', 'data-empty': 'none' }, 'You have not used any of these services yet.'));
    } else {
      replace(body, h('table', {},
        h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'Service'), h('th', { scope: 'col' }, 'Payee'), h('th', { scope: 'col' }, 'Status'),
          h('th', { scope: 'col', class: 'amount' }, 'Amount'), h('th', { scope: 'col' }, 'Requested'), h('th', { scope: 'col' }, 'Updated'))),
        h('tbody', {}, list.services.map((s) => h('tr', { 'data-service': s.id, 'data-status': s.status },
          h('td', {}, SERVICE_KINDS[s.kind] ?? fmt.words(s.kind)),
          h('td', {}, servicePayee(s), loanSchedule(s)),
          h('td', {}, h('span', { class: 'badge' }, fmt.words(s.status))),
          h('td', { class: 'amount' }, serviceAmount(s)),
          h('td', {}, fmt.when(s.created_at)),
          h('td', {}, fmt.when(s.updated_at)))))));
    }
  };
  load();
  return { title: 'Services', root, serviceChanged: () => load() };
}

// ---------------------------------------------------------------------------------------------
// Profile (read-only)

/**
 * @param {[string, string | undefined | null][]} pairs
 */
function fields(pairs) {
  return h('dl', { class: 'fields' }, pairs.filter(([, v]) => v).flatMap(([k, v]) => [h('dt', {}, k), h('dd', {}, v ?? '')]));
}

/**
 * The profile as the web may show it: identity documents only by their last digits.
 * @param {Context} ctx
 * @returns {View}
 */
export function profile(ctx) {
  const p = ctx.profile;
  const party = p.party;
  const identity =
    party.type === 'person'
      ? fields([
          ['Name', `${party.given_name} ${party.family_name}`],
          ['Username', p.username],
          ['Date of birth', party.date_of_birth ? fmt.day(party.date_of_birth) : null],
        ])
      : fields([
          ['Legal name', party.legal_name],
          ['Username', p.username],
          ['Tax id', party.tax_id],
          ['Legal representative', party.legal_representative],
          ['Incorporated', party.incorporation
            ? [party.incorporation.country, party.incorporation.date ? fmt.day(party.incorporation.date) : '', party.incorporation.registry_number]
                .filter(Boolean).join(' · ')
            : null],
        ]);
  const documents = p.documents.length
    ? h('ul', {}, p.documents.map((d) => h('li', { 'data-document': d.kind },
        `${fmt.words(d.kind)} ${d.number_masked} (${d.issuing_country})`,
        d.expires_on ? h('span', { class: 'muted' }, ` · expires ${fmt.day(d.expires_on)}`) : null)))
    : h('p', { class: 'muted' }, 'No identity documents on file.');
  const root = h(
    'section',
    { 'aria-labelledby': 'profile-title' },
    h('h1', { id: 'profile-title' }, 'Profile'),
    h('p', { class: 'sub' }, 'Read-only here; to change these details, contact the bank.'),
    h('div', { class: 'card' }, h('h2', {}, party.type === 'person' ? 'You' : 'The company'), identity),
    h('div', { class: 'card' }, h('h2', {}, 'Identity documents'), documents),
    h('div', { class: 'card' }, h('h2', {}, 'Contact'), fields([
      ['E-mail', p.contact.email], ['Phone', p.contact.phone], ['Address', p.contact.address],
    ])),
    h('div', { class: 'card' }, h('h2', {}, 'Verification'), fields([
      ['Identity check', fmt.words(p.kyc)], ['Fingerprint sign-in', fmt.words(p.biometric.status)],
    ])),
  );
  return { title: 'Profile', root };
}

// ---------------------------------------------------------------------------------------------
// Security: passkeys

/**
 * @typedef {object} PasskeyView
 * @property {string} id
 * @property {string} name
 * @property {string} created_at
 * @property {string | null} [last_used_at]
 */

/**
 * What a failed passkey request tells the customer.
 * @param {unknown} e
 */
function passkeyProblemText(e) {
  if (e instanceof api.ApiProblem && e.type === api.STEP_UP_PROBLEM) {
    return 'For your safety, adding or removing a passkey needs a recent sign-in. Sign out and sign in again, then retry.';
  }
  if (e instanceof api.ApiProblem) return e.detail || e.title;
  return failureText(e);
}

/**
 * The customer's passkeys: listed, added (the browser's passkey prompt) and removed.
 * @param {Context} ctx
 * @returns {View}
 */
export function security(ctx) {
  const list = h('div', { id: 'passkey-list' }, h('p', { class: 'muted', role: 'status' }, 'Loading…'));
  const message = h('p', { id: 'passkey-message', role: 'status', 'aria-live': 'polite' });
  const name = /** @type {HTMLInputElement} */ (h('input', { id: 'passkey-name', name: 'name', required: '', maxlength: '100', autocomplete: 'off', placeholder: 'e.g. Work laptop' }));
  const add = h('button', { type: 'submit', id: 'passkey-add' }, 'Add a passkey');
  const form = h('form', { id: 'passkey-form', class: 'inline' },
    h('label', { for: 'passkey-name' }, 'Name of the new passkey'), name, add);
  /** @param {string} text @param {'ok' | 'error'} kind */
  const say = (text, kind) => {
    message.textContent = text;
    message.className = kind === 'error' ? 'error' : 'ok';
  };

  const load = async () => {
    /** @type {{ passkeys: PasskeyView[] }} */
    const { passkeys } = await api.get('/v1/passkeys');
    if (passkeys.length === 0) {
      replace(list, h('p', { class: 'empty', 'data-empty': 'passkeys' }, 'No passkeys yet. Add one to sign in with your fingerprint, face or device PIN instead of your password and code.'));
      return;
    }
    replace(list, h('ul', { class: 'passkeys' }, passkeys.map((p) => {
      const remove = h('button', { type: 'button', class: 'secondary', 'data-remove': p.id }, 'Remove');
      remove.addEventListener('click', () => {
        remove.setAttribute('disabled', '');
        api.call('DELETE', `/v1/passkeys/${p.id}`)
          .then(() => { say(`Removed the passkey “${p.name}”.`, 'ok'); return load(); })
          .catch((e) => { remove.removeAttribute('disabled'); say(passkeyProblemText(e), 'error'); });
      });
      return h('li', { 'data-passkey': p.id },
        h('span', { class: 'name' }, p.name),
        h('span', { class: 'muted' }, ` · added ${fmt.when(p.created_at)}`, p.last_used_at ? ` · last used ${fmt.when(p.last_used_at)}` : ' · not used yet'),
        remove);
    })));
  };

  form.addEventListener('submit', (event) => {
    event.preventDefault();
    add.setAttribute('disabled', '');
    say('Follow your browser’s prompt to create the passkey…', 'ok');
    (async () => {
      /** @type {{ id: string, name: string, options: unknown }} */
      const begun = await api.call('POST', '/v1/passkeys', { name: name.value });
      const credential = await navigator.credentials.create(creationOptions(begun.options));
      /** @type {PasskeyView} */
      const made = await api.call('POST', `/v1/passkeys/${begun.id}/confirm`, credentialJSON(credential));
      name.value = '';
      say(`Added the passkey “${made.name}”. You can now sign in with your username and this passkey.`, 'ok');
      await load();
    })()
      .catch((e) => say(passkeyProblemText(e), 'error'))
      .finally(() => add.removeAttribute('disabled'));
  });

  const supported = 'PublicKeyCredential' in window;
  const root = h(
    'section',
    { 'aria-labelledby': 'security-title' },
    h('h1', { id: 'security-title' }, 'Security'),
    h('p', { class: 'sub' }, 'Passkeys sign you in with your username and your device’s fingerprint, face or PIN: no password or code, and they only work on this bank’s site.'),
    h('div', { class: 'card' }, h('h2', {}, 'Passkeys'), list, message,
      supported ? form : h('p', { class: 'muted' }, 'This browser cannot use passkeys.')),
  );
  load().catch((e) => {
    replace(list, h('p', { class: 'muted' }, 'Your passkeys could not be loaded.'));
    ctx.showProblem(e);
  });
  return { title: 'Security', root };
}
