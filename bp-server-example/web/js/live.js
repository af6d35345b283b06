// The live connection: `GET /v1/events` through EventSource. A browser cannot send the access
// token on an EventSource, so each connection spends a fresh single-use ticket
// (`POST /v1/events/ticket`). EventSource's own retry would reuse a spent ticket, so on any
// error the stream is closed here and reopened with a new ticket and the last cursor: the
// server then replays what was missed, with no gap and no duplicate.

import * as api from './api.js';

/** The event types the app listens for (an EventSource only delivers the names it listens to). */
const LEDGER_TYPES = ['account.opened', 'account.status_changed', 'transfer.posted', 'transfer.pending', 'transfer.voided'];
const SECURITY_KINDS = [
  'login_succeeded', 'password_failed', 'second_factor_failed', 'locked_out', 'locked_out_attempt',
  'device_added', 'device_removed', 'refresh_token_reuse', 'session_revoked', 'challenge_answered',
  'challenge_failed', 'sca_exempted', 'beneficiary_trusted', 'beneficiary_removed', 'credentials_changed',
  'external_token_accepted', 'passkey_added', 'passkey_removed',
];
/** A change of an external service request (docs/events.md): its status, not its balances. */
const SERVICE_TYPE = 'service.updated';
/** Waits before reconnecting: the first retry is quick, later ones back off (with jitter). */
const BACKOFF_MS = [250, 1000, 2000, 4000, 8000];

/**
 * A ledger event (docs/events.md): one account's change, with its balances after it.
 * @typedef {object} LedgerEvent
 * @property {string} id
 * @property {string} account_id
 * @property {number} seq
 * @property {string} at
 * @property {string} type
 * @property {{ balances?: { posted: import('./format.js').Money, held: import('./format.js').Money, available: import('./format.js').Money }, transfer_id?: string }} data
 */

/**
 * A `service.updated` event: an external service request changed status.
 * @typedef {object} ServiceEvent
 * @property {string} id
 * @property {string} account_id
 * @property {number} seq
 * @property {{ service_id: string, status: string }} data
 */

/** @typedef {'connecting' | 'live' | 'reconnecting' | 'offline'} LiveState */

export class LiveStream {
  /**
   * @param {object} handlers
   * @param {(event: LedgerEvent) => void} handlers.onLedgerEvent
   * @param {(kind: string, data: { detail?: Record<string, unknown> }) => void} handlers.onSecurityEvent
   * @param {(event: ServiceEvent) => void} handlers.onServiceEvent
   * @param {(state: LiveState, detail: string) => void} handlers.onState
   */
  constructor(handlers) {
    this.handlers = handlers;
    /** @type {EventSource | null} */
    this.source = null;
    /** The cursor after the last message handled (the stream's `id:`). */
    this.cursor = '';
    this.failures = 0;
    this.stopped = true;
    /** Whether `open` is waiting for a ticket (so that a second one does not start). */
    this.opening = false;
    /** @type {ReturnType<typeof setTimeout> | undefined} */
    this.retry = undefined;
    this.onOnline = () => this.reconnectNow();
  }

  /**
   * Opens the stream after `cursor` (e.g. `v1.<seq>.<seq>` from GET /v1/accounts).
   * @param {string} cursor
   */
  start(cursor) {
    this.cursor = cursor;
    this.stopped = false;
    window.addEventListener('online', this.onOnline);
    void this.open();
  }

  /** Closes the stream for good (sign-out). */
  stop() {
    this.stopped = true;
    clearTimeout(this.retry);
    window.removeEventListener('online', this.onOnline);
    this.source?.close();
    this.source = null;
  }

  reconnectNow() {
    if (this.stopped || this.source || this.opening) return;
    clearTimeout(this.retry);
    this.failures = 0;
    void this.open();
  }

  async open() {
    if (this.opening) return;
    this.handlers.onState(this.failures === 0 ? 'connecting' : 'reconnecting', '');
    /** @type {{ ticket: string }} */
    let ticket;
    this.opening = true;
    try {
      // Reconnecting is the app's doing, not the customer's: a background request.
      ticket = await api.call('POST', '/v1/events/ticket', undefined, { background: true });
    } catch (e) {
      if (e instanceof api.ApiProblem && e.type === api.PAUSED_PROBLEM) {
        // The token expired while the customer was away: reconnect once they are back.
        this.handlers.onState('offline', e.detail);
        api.whenActive(() => this.reconnectNow());
        return;
      }
      this.failed(e instanceof api.ApiProblem ? e.title : 'no connection');
      return;
    } finally {
      this.opening = false;
    }
    if (this.stopped || this.source) return;
    const query = new URLSearchParams({ ticket: ticket.ticket });
    if (this.cursor) query.set('last_event_id', this.cursor);
    const source = new EventSource(`/v1/events?${query}`);
    this.source = source;
    source.onopen = () => {
      this.failures = 0;
      this.handlers.onState('live', '');
    };
    source.onerror = () => {
      // Closed by the server (restart, shutdown, a slow client) or a lost network: reopen with a
      // new ticket and the cursor.
      source.close();
      if (this.source === source) this.source = null;
      this.failed('connection lost');
    };
    for (const type of LEDGER_TYPES) {
      source.addEventListener(type, (message) => {
        this.cursor = message.lastEventId || this.cursor;
        this.handlers.onLedgerEvent(JSON.parse(message.data));
      });
    }
    source.addEventListener(SERVICE_TYPE, (message) => {
      this.cursor = message.lastEventId || this.cursor;
      this.handlers.onServiceEvent(JSON.parse(message.data));
    });
    for (const kind of SECURITY_KINDS) {
      source.addEventListener(`security.${kind}`, (message) => {
        this.cursor = message.lastEventId || this.cursor;
        this.handlers.onSecurityEvent(kind, JSON.parse(message.data));
      });
    }
  }

  /** @param {string} why */
  failed(why) {
    if (this.stopped) return;
    const wait = BACKOFF_MS[Math.min(this.failures, BACKOFF_MS.length - 1)];
    this.failures += 1;
    this.handlers.onState(navigator.onLine ? 'reconnecting' : 'offline', why);
    this.retry = setTimeout(() => void this.open(), wait * (0.75 + Math.random() / 2));
  }
}
