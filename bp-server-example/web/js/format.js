// Amounts, dates and labels for people. Amounts stay decimal strings end to end: the browser's
// Intl formats the string itself (exact), never a float made from it.

/** @typedef {{ amount: string, currency: string }} Money */

/** @type {Map<string, Intl.NumberFormat>} */
const moneyFormats = new Map();

/**
 * @param {string} currency
 * @param {'auto' | 'always'} sign
 */
function moneyFormat(currency, sign) {
  const key = `${currency}/${sign}`;
  let format = moneyFormats.get(key);
  if (!format) {
    format = new Intl.NumberFormat(undefined, { style: 'currency', currency, signDisplay: sign });
    moneyFormats.set(key, format);
  }
  return format;
}

/**
 * Formats a decimal string exactly (Intl.NumberFormat takes numeric strings as exact decimals).
 * @param {Intl.NumberFormat} format
 * @param {string} decimal
 */
function formatDecimal(format, decimal) {
  return /** @type {{ format(value: string): string }} */ (/** @type {unknown} */ (format)).format(decimal);
}

/**
 * An amount in the browser's locale with its currency, e.g. "€2,472.50" or "2.472,50 €".
 * @param {Money} money
 */
export function money(money) {
  return formatDecimal(moneyFormat(money.currency, 'auto'), money.amount);
}

/**
 * An amount with the sign of its direction: "+€5.00" for money in, "−€5.00" for money out.
 * @param {Money} money
 * @param {'debit' | 'credit'} direction
 */
export function signedMoney(money, direction) {
  const decimal = direction === 'debit' ? `-${money.amount}` : money.amount;
  return formatDecimal(moneyFormat(money.currency, 'always'), decimal);
}

const dateTime = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'short' });
const dateOnly = new Intl.DateTimeFormat(undefined, { dateStyle: 'long' });

/** @param {string} iso an RFC 3339 timestamp */
export function when(iso) {
  return dateTime.format(new Date(iso));
}

/** @param {string} isoDate a `YYYY-MM-DD` date */
export function day(isoDate) {
  const [y, m, d] = isoDate.split('-').map(Number);
  return dateOnly.format(new Date(y, m - 1, d));
}

/** @param {string} number a 12-digit account number, shown in groups of four */
export function accountNumber(number) {
  return number.replace(/(\d{4})(?=\d)/g, '$1 ');
}

/** @type {Record<string, string>} */
const KINDS = {
  internal: 'Transfer',
  deposit: 'Deposit',
  withdrawal: 'Withdrawal',
  interbank: 'Interbank transfer',
  international: 'International transfer',
  loan: 'Loan',
  fee: 'Fee',
  fx: 'Currency exchange',
  interest: 'Interest',
};

/** @param {string} kind a transfer kind of the API */
export function kind(kind) {
  return KINDS[kind] ?? words(kind);
}

/** The transfer kinds, for filters. */
export const TRANSFER_KINDS = Object.keys(KINDS);

/** @param {string} token an API enum value such as `in_progress` → "In progress" */
export function words(token) {
  const text = token.replace(/_/g, ' ');
  return text.charAt(0).toUpperCase() + text.slice(1);
}
