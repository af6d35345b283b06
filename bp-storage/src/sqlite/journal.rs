//! The journal, packed: each batch the writer commits appends its journal entries to
//! `journal_blocks` a block (row) per up to [`BLOCK_LEN_MAX`] entries, at positions
//! `first_position .. first_position + len` in order. An entry is one event, or the two events (debit, credit) of a posting; it names
//! accounts by their row keys, and its numbers are varints, so a transfer's entry takes about 45
//! bytes instead of a row of fifteen columns and its B-tree cell.
//!
//! A block's `data` is its entries one after another, each as its length (a varint) and its body:
//!
//! ```text
//! body := kind:u8 flags:u8 at:zigzag(at - block.at)
//!         [transfer_id:16 bytes] [transfer_kind:varint] [amount:zigzag] [code:zigzag]
//!         a_key a_seq a_posted:zigzag a_held:zigzag
//!         [b_key b_seq b_posted:zigzag b_held:zigzag] [counterparty_key] [doc_len doc:utf-8]
//! ```
//!
//! where `flags` says which bracketed parts are there ([`F_TRANSFER`], ...). The length prefix lets
//! a reader skip to the entry it wants without decoding the ones before it.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use bp_core::StoreError;
use bp_core::ids::AccountId;
use bp_core::money::Currency;
use rusqlite::{Connection, OptionalExtension, Transaction, params};

use super::codec::{KIND_PENDING, KIND_POSTED, Side, corrupt, currency, put_varint, uuid};
use super::sql_err;
use super::writer::SharedLive;

const F_TRANSFER: u8 = 1;
const F_TRANSFER_KIND: u8 = 2;
const F_AMOUNT: u8 = 4;
const F_CODE: u8 = 8;
const F_B: u8 = 16;
const F_COUNTERPARTY: u8 = 32;
const F_DOC: u8 = 64;

/// One journal entry as stored: accounts by row key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Entry {
    /// One of the codec's `KIND_*`.
    pub kind: i64,
    /// Microseconds since the epoch.
    pub at: i64,
    pub transfer_id: Option<[u8; 16]>,
    /// The transfer's kind, for the events that carry it (posted, pending).
    pub transfer_kind: Option<i64>,
    pub amount_minor: Option<i64>,
    pub code: Option<i64>,
    pub a: Side,
    pub b: Option<Side>,
    /// A pending transfer's credit account.
    pub counterparty_key: Option<i64>,
    /// A `service.updated` event's body, as JSON.
    pub doc: Option<String>,
}

impl Entry {
    /// Its sides: `(side number, side)`.
    pub(crate) fn sides(&self) -> impl Iterator<Item = (u8, Side)> + '_ {
        std::iter::once((0, self.a)).chain(self.b.map(|b| (1, b)))
    }
}

fn put_i64(out: &mut Vec<u8>, v: i64) {
    // Zigzag: small magnitudes of either sign take few bytes.
    put_varint(out, u64::from_ne_bytes(((v << 1) ^ (v >> 63)).to_ne_bytes()));
}

fn put_side(out: &mut Vec<u8>, s: &Side) {
    put_i64(out, s.key);
    put_varint(out, s.seq);
    put_i64(out, s.posted);
    put_i64(out, s.held);
}

/// Reads what the `put_*` functions wrote.
struct Cursor<'a> {
    data: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn byte(&mut self) -> Result<u8, StoreError> {
        let b = *self.data.get(self.at).ok_or_else(|| corrupt("journal block"))?;
        self.at += 1;
        Ok(b)
    }

    fn u64(&mut self) -> Result<u64, StoreError> {
        let mut v = 0u64;
        let mut shift = 0u32;
        loop {
            let b = self.byte()?;
            if shift > 63 {
                return Err(corrupt("journal block"));
            }
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
            shift += 7;
        }
    }

    fn i64(&mut self) -> Result<i64, StoreError> {
        let v = self.u64()?;
        Ok(i64::from_ne_bytes((v >> 1).to_ne_bytes()) ^ -i64::from_ne_bytes((v & 1).to_ne_bytes()))
    }

    fn bytes(&mut self, n: usize) -> Result<&'a [u8], StoreError> {
        let end = self.at.checked_add(n).filter(|e| *e <= self.data.len()).ok_or_else(|| corrupt("journal block"))?;
        let out = &self.data[self.at..end];
        self.at = end;
        Ok(out)
    }

    fn side(&mut self) -> Result<Side, StoreError> {
        Ok(Side { key: self.i64()?, seq: self.u64()?, posted: self.i64()?, held: self.i64()? })
    }

    fn done(&self) -> bool {
        self.at >= self.data.len()
    }

    /// Skips one entry.
    fn skip(&mut self) -> Result<(), StoreError> {
        let len = usize::try_from(self.u64()?).map_err(|_| corrupt("journal block"))?;
        self.bytes(len).map(|_| ())
    }

    /// Decodes one entry of a block whose time is `base_at`.
    fn entry(&mut self, base_at: i64) -> Result<Entry, StoreError> {
        let len = usize::try_from(self.u64()?).map_err(|_| corrupt("journal block"))?;
        let mut c = Cursor { data: self.bytes(len)?, at: 0 };
        let kind = i64::from(c.byte()?);
        let flags = c.byte()?;
        let at = base_at.checked_add(c.i64()?).ok_or_else(|| corrupt("journal time"))?;
        let has = |f: u8| flags & f != 0;
        let transfer_id = if has(F_TRANSFER) {
            Some(<[u8; 16]>::try_from(c.bytes(16)?).map_err(|_| corrupt("journal transfer"))?)
        } else {
            None
        };
        let transfer_kind = if has(F_TRANSFER_KIND) { Some(c.i64()?) } else { None };
        let amount_minor = if has(F_AMOUNT) { Some(c.i64()?) } else { None };
        let code = if has(F_CODE) { Some(c.i64()?) } else { None };
        let a = c.side()?;
        let b = if has(F_B) { Some(c.side()?) } else { None };
        let counterparty_key = if has(F_COUNTERPARTY) { Some(c.i64()?) } else { None };
        let doc = if has(F_DOC) {
            let n = usize::try_from(c.u64()?).map_err(|_| corrupt("journal block"))?;
            Some(String::from_utf8(c.bytes(n)?.to_vec()).map_err(|_| corrupt("journal document"))?)
        } else {
            None
        };
        if !c.done() {
            return Err(corrupt("journal block"));
        }
        Ok(Entry { kind, at, transfer_id, transfer_kind, amount_minor, code, a, b, counterparty_key, doc })
    }
}

/// Most entries in a block: about 3 KB for transfers, so that a block fits in one 4 KB page and
/// a reader looking for one entry reads one page, not a chain of overflow pages. A batch writes
/// one block per this many entries.
pub(crate) const BLOCK_LEN_MAX: i64 = 64;

/// The entries of one batch, encoded as they come and written as rows of up to
/// [`BLOCK_LEN_MAX`] entries.
#[derive(Debug, Default)]
pub(crate) struct BlockWriter {
    first_position: i64,
    len: i64,
    base_at: i64,
    data: Vec<u8>,
    body: Vec<u8>,
}

impl BlockWriter {
    /// Starts an empty block at `first_position`, keeping the buffers' capacity.
    pub(crate) fn start(&mut self, first_position: i64) {
        self.first_position = first_position;
        self.len = 0;
        self.data.clear();
    }

    /// The position the next entry takes.
    pub(crate) fn next_position(&self) -> i64 {
        self.first_position + self.len
    }

    /// Appends an entry inside the open transaction, writing the block first if it is full;
    /// returns the entry's position.
    pub(crate) fn push(&mut self, conn: &Connection, e: &Entry) -> Result<i64, StoreError> {
        if self.len >= BLOCK_LEN_MAX {
            self.write(conn)?;
            self.start(self.next_position());
        }
        Ok(self.append(e))
    }

    /// Appends an entry to the block in memory; returns its position.
    fn append(&mut self, e: &Entry) -> i64 {
        if self.len == 0 {
            self.base_at = e.at;
        }
        let b = &mut self.body;
        b.clear();
        let flag = |on: bool, f: u8| if on { f } else { 0 };
        let flags = flag(e.transfer_id.is_some(), F_TRANSFER)
            | flag(e.transfer_kind.is_some(), F_TRANSFER_KIND)
            | flag(e.amount_minor.is_some(), F_AMOUNT)
            | flag(e.code.is_some(), F_CODE)
            | flag(e.b.is_some(), F_B)
            | flag(e.counterparty_key.is_some(), F_COUNTERPARTY)
            | flag(e.doc.is_some(), F_DOC);
        b.push(u8::try_from(e.kind).expect("journal kinds fit a byte"));
        b.push(flags);
        put_i64(b, e.at - self.base_at);
        if let Some(id) = &e.transfer_id {
            b.extend_from_slice(id);
        }
        for v in [e.transfer_kind, e.amount_minor, e.code].into_iter().flatten() {
            put_i64(b, v);
        }
        put_side(b, &e.a);
        if let Some(side) = &e.b {
            put_side(b, side);
        }
        if let Some(k) = e.counterparty_key {
            put_i64(b, k);
        }
        if let Some(doc) = &e.doc {
            put_varint(b, u64::try_from(doc.len()).unwrap_or(u64::MAX));
            b.extend_from_slice(doc.as_bytes());
        }
        put_varint(&mut self.data, u64::try_from(b.len()).unwrap_or(u64::MAX));
        self.data.extend_from_slice(b);
        self.len += 1;
        self.first_position + self.len - 1
    }

    /// Writes the block, if it has entries, inside the open transaction.
    pub(crate) fn write(&self, conn: &Connection) -> Result<(), StoreError> {
        if self.len == 0 {
            return Ok(());
        }
        conn.prepare_cached(INSERT_BLOCK)
            .and_then(|mut s| s.execute(params![self.first_position, self.len, self.base_at, self.data]))
            .map_err(sql_err)?;
        Ok(())
    }
}

const INSERT_BLOCK: &str = "INSERT INTO journal_blocks (first_position, len, at, data) VALUES (?1, ?2, ?3, ?4)";

/// A block as read: its first position, its entry count, its time and its data.
struct Block {
    first: i64,
    len: i64,
    at: i64,
    data: Vec<u8>,
}

impl Block {
    fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self { first: r.get(0)?, len: r.get(1)?, at: r.get(2)?, data: r.get(3)? })
    }

    fn holds(&self, position: i64) -> bool {
        position >= self.first && position < self.first + self.len
    }

    /// The entry at `position`, skipping the ones before it.
    fn entry(&self, position: i64) -> Result<Entry, StoreError> {
        let mut c = Cursor { data: &self.data, at: 0 };
        for _ in self.first..position {
            c.skip()?;
        }
        c.entry(self.at)
    }

    /// Visits its entries from `from` on, in order, until `visit` returns `false`; returns
    /// whether it never did.
    fn visit(
        &self,
        from: i64,
        visit: &mut impl FnMut(i64, Entry) -> Result<bool, StoreError>,
    ) -> Result<bool, StoreError> {
        let mut c = Cursor { data: &self.data, at: 0 };
        for position in self.first..self.first + self.len {
            if position < from {
                c.skip()?;
                continue;
            }
            if !visit(position, c.entry(self.at)?)? {
                return Ok(false);
            }
        }
        if !c.done() {
            return Err(corrupt("journal block length"));
        }
        Ok(true)
    }
}

const BLOCK_HOLDING: &str = "SELECT first_position, len, at, data FROM journal_blocks WHERE first_position <= ?1 \
     ORDER BY first_position DESC LIMIT 1";
const BLOCKS_AFTER: &str =
    "SELECT first_position, len, at, data FROM journal_blocks WHERE first_position > ?1 ORDER BY first_position";

fn block_holding(conn: &Connection, position: i64) -> Result<Option<Block>, StoreError> {
    let block = conn
        .prepare_cached(BLOCK_HOLDING)
        .and_then(|mut s| s.query_row([position], Block::from_row).optional())
        .map_err(sql_err)?;
    Ok(block.filter(|b| b.holds(position)))
}

/// Visits the journal's entries from `from` on, in position order, until `visit` returns
/// `false`. Run it inside a read transaction for one snapshot.
pub(crate) fn scan(
    conn: &Connection,
    from: i64,
    mut visit: impl FnMut(i64, Entry) -> Result<bool, StoreError>,
) -> Result<(), StoreError> {
    if let Some(block) = block_holding(conn, from)?
        && !block.visit(from, &mut visit)?
    {
        return Ok(());
    }
    let mut stmt = conn.prepare_cached(BLOCKS_AFTER).map_err(sql_err)?;
    let mut rows = stmt.query([from]).map_err(sql_err)?;
    while let Some(row) = rows.next().map_err(sql_err)? {
        let block = Block::from_row(row).map_err(sql_err)?;
        if !block.visit(block.first, &mut visit)? {
            break;
        }
    }
    Ok(())
}

/// The position after the journal's last entry, and the time of that entry (`None`: empty).
pub(crate) fn end(conn: &Connection) -> Result<(i64, Option<i64>), StoreError> {
    let last = conn
        .query_row(
            "SELECT first_position, len, at, data FROM journal_blocks ORDER BY first_position DESC LIMIT 1",
            [],
            Block::from_row,
        )
        .optional()
        .map_err(sql_err)?;
    match last {
        None => Ok((1, None)),
        Some(b) => {
            let last = b.entry(b.first + b.len - 1)?;
            Ok((b.first + b.len, Some(last.at)))
        }
    }
}

/// Random access to entries for one read: keeps the last block read, since the entries a page
/// asks for are often in one batch.
pub(crate) struct Reader<'c> {
    conn: &'c Connection,
    block: Option<Block>,
}

impl<'c> Reader<'c> {
    pub(crate) fn new(conn: &'c Connection) -> Self {
        Self { conn, block: None }
    }

    /// The entry at `position`, which must exist.
    pub(crate) fn entry(&mut self, position: i64) -> Result<Entry, StoreError> {
        if !self.block.as_ref().is_some_and(|b| b.holds(position)) {
            self.block = Some(block_holding(self.conn, position)?.ok_or_else(|| corrupt("journal position"))?);
        }
        self.block.as_ref().ok_or_else(|| corrupt("journal position"))?.entry(position)
    }
}

/// Most account keys a [`KeyCache`] remembers (about 48 bytes each); past it, it starts over.
const KEYS_CACHED_MAX: usize = 1 << 20;

/// Account ids and currencies by row key, shared by the store's readers: decoding a journal
/// block needs them for every entry, and a read of the `accounts` row costs several thousand
/// instructions (two per transfer in the relay's outbox reads).
#[derive(Debug, Default)]
pub(crate) struct KeyCache(Mutex<HashMap<i64, (AccountId, Currency)>>);

impl KeyCache {
    fn get(&self, key: i64) -> Option<(AccountId, Currency)> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).get(&key).copied()
    }

    fn insert(&self, key: i64, value: (AccountId, Currency)) {
        let mut known = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if known.len() >= KEYS_CACHED_MAX {
            known.clear();
        }
        known.insert(key, value);
    }
}

/// Account ids and currencies by row key, read once per key (and, for readers, once per store:
/// see [`KeyCache`]).
pub(crate) struct AccountKeys<'c> {
    conn: &'c Connection,
    known: HashMap<i64, (AccountId, Currency)>,
    shared: Option<&'c SharedLive>,
}

impl<'c> AccountKeys<'c> {
    /// For one read (the writer's recovery).
    pub(crate) fn new(conn: &'c Connection) -> Self {
        Self { conn, known: HashMap::new(), shared: None }
    }

    /// For a reader of committed blocks, sharing what it learns with the store's other reads.
    pub(crate) fn shared(conn: &'c Connection, live: &'c SharedLive) -> Self {
        Self { conn, known: HashMap::new(), shared: Some(live) }
    }

    pub(crate) fn get(&mut self, key: i64) -> Result<(AccountId, Currency), StoreError> {
        if let Some(v) = self.known.get(&key) {
            return Ok(*v);
        }
        let cached = self.shared.and_then(|l| l.read().unwrap_or_else(PoisonError::into_inner).keys.get(key));
        let v = match cached {
            Some(v) => v,
            None => {
                let (id, code): (Vec<u8>, String) = self
                    .conn
                    .prepare_cached("SELECT id, currency FROM accounts WHERE key = ?1")
                    .and_then(|mut s| s.query_row([key], |r| Ok((r.get(0)?, r.get(1)?))).optional())
                    .map_err(sql_err)?
                    .ok_or_else(|| corrupt("journal account"))?;
                let v = (AccountId::from_uuid(uuid(&id)?), currency(&code)?);
                if let Some(live) = self.shared {
                    live.read().unwrap_or_else(PoisonError::into_inner).keys.insert(key, v);
                }
                v
            }
        };
        self.known.insert(key, v);
        Ok(v)
    }
}

/// The upgrade to schema version 11: packs the rows of the old `journal` table (one per entry)
/// into blocks of consecutive positions, then drops it.
pub(crate) fn pack_rows(tx: &Transaction<'_>) -> Result<(), StoreError> {
    let mut stmt = tx
        .prepare(
            "SELECT j.position, j.kind, j.at, j.transfer_id, t.kind, j.amount_minor, j.code, \
             j.a_key, j.a_seq, j.a_posted, j.a_held, j.b_key, j.b_seq, j.b_posted, j.b_held, t.credit_key, j.doc \
             FROM journal j LEFT JOIN transfers t ON t.id = j.transfer_id ORDER BY j.position",
        )
        .map_err(sql_err)?;
    let mut rows = stmt.query([]).map_err(sql_err)?;
    let mut block = BlockWriter::default();
    block.start(1);
    while let Some(r) = rows.next().map_err(sql_err)? {
        let position: i64 = r.get(0).map_err(sql_err)?;
        if position != block.next_position() {
            block.write(tx)?;
            block.start(position);
        }
        let kind: i64 = r.get(1).map_err(sql_err)?;
        let transfer_id: Option<Vec<u8>> = r.get(3).map_err(sql_err)?;
        let transfer_id = transfer_id
            .map(|id| <[u8; 16]>::try_from(id.as_slice()).map_err(|_| corrupt("journal transfer")))
            .transpose()?;
        let u = |i: usize| -> Result<u64, StoreError> {
            let v: i64 = r.get(i).map_err(sql_err)?;
            u64::try_from(v).map_err(|_| corrupt("journal seq"))
        };
        let b_key: Option<i64> = r.get(11).map_err(sql_err)?;
        let b = match b_key {
            Some(key) => {
                Some(Side { key, seq: u(12)?, posted: r.get(13).map_err(sql_err)?, held: r.get(14).map_err(sql_err)? })
            }
            None => None,
        };
        let carries_kind = kind == KIND_POSTED || kind == KIND_PENDING;
        let entry = Entry {
            kind,
            at: r.get(2).map_err(sql_err)?,
            transfer_id,
            transfer_kind: if carries_kind { r.get(4).map_err(sql_err)? } else { None },
            amount_minor: r.get(5).map_err(sql_err)?,
            code: r.get(6).map_err(sql_err)?,
            a: Side {
                key: r.get(7).map_err(sql_err)?,
                seq: u(8)?,
                posted: r.get(9).map_err(sql_err)?,
                held: r.get(10).map_err(sql_err)?,
            },
            b,
            counterparty_key: if kind == KIND_PENDING { r.get(15).map_err(sql_err)? } else { None },
            doc: r.get(16).map_err(sql_err)?,
        };
        block.push(tx, &entry)?;
    }
    block.write(tx)?;
    drop(rows);
    drop(stmt);
    tx.execute_batch("DROP TABLE journal").map_err(sql_err)
}

#[cfg(test)]
mod tests {
    use super::{Block, BlockWriter, Cursor, Entry};
    use crate::sqlite::codec::{KIND_POSTED, KIND_SERVICE, Side};

    fn side(key: i64, seq: u64, posted: i64) -> Side {
        Side { key, seq, posted, held: 7 }
    }

    /// The `n`th transfer of accounts 1 and 2, `n` minor units, stamped `1_000 + n`.
    fn transfer(n: i64) -> Entry {
        let seq = u64::try_from(n).expect("positive");
        Entry {
            kind: KIND_POSTED,
            at: 1_000 + n,
            transfer_id: Some([u8::try_from(n % 200).expect("small"); 16]),
            transfer_kind: Some(0),
            amount_minor: Some(n),
            code: None,
            a: side(1, seq, -n),
            b: Some(side(2, seq, n)),
            counterparty_key: None,
            doc: None,
        }
    }

    #[test]
    fn entries_round_trip_and_skip() {
        let posted = Entry {
            kind: KIND_POSTED,
            at: 1_767_225_600_000_000,
            transfer_id: Some([9; 16]),
            transfer_kind: Some(0),
            amount_minor: Some(1_234),
            code: None,
            a: side(3, 40, -1_234),
            b: Some(side(4_000_000, 1, i64::MAX)),
            counterparty_key: None,
            doc: None,
        };
        let service = Entry {
            kind: KIND_SERVICE,
            at: posted.at - 5,
            transfer_id: None,
            transfer_kind: None,
            amount_minor: None,
            code: Some(-2),
            a: side(1, u64::MAX >> 1, i64::MIN),
            b: None,
            counterparty_key: Some(8),
            doc: Some("{\"type\":\"service.updated\"}".into()),
        };
        let mut w = BlockWriter::default();
        w.start(100);
        assert_eq!(w.append(&posted), 100);
        assert_eq!(w.append(&service), 101);
        assert_eq!(w.append(&posted), 102);
        let block = Block { first: 100, len: 3, at: w.base_at, data: w.data.clone() };
        assert_eq!(block.entry(101).expect("second"), service);
        assert_eq!(block.entry(102).expect("third"), posted);
        let mut seen = Vec::new();
        assert!(
            block
                .visit(101, &mut |p, e| Ok({
                    seen.push((p, e));
                    true
                }))
                .expect("visit")
        );
        assert_eq!(seen, vec![(101, service), (102, posted)]);
    }

    /// A batch longer than a block writes several rows; scans and random reads cross them.
    #[test]
    fn a_long_batch_spans_blocks_that_read_back_in_order() {
        let mut conn = rusqlite::Connection::open_in_memory().expect("open");
        crate::sqlite::schema::migrate(&mut conn).expect("migrate");
        let entry = transfer;
        let len = 2 * super::BLOCK_LEN_MAX + 7;
        let mut w = BlockWriter::default();
        w.start(5);
        for n in 1..=len {
            assert_eq!(w.push(&conn, &entry(n)).expect("push"), 4 + n);
        }
        w.write(&conn).expect("the last block");
        let rows: i64 = conn.query_row("SELECT count(*) FROM journal_blocks", [], |r| r.get(0)).expect("count");
        assert_eq!(rows, 3);
        assert_eq!(super::end(&conn).expect("end"), (5 + len, Some(1_000 + len)));

        let mut seen = Vec::new();
        super::scan(&conn, 60, |p, e| {
            seen.push((p, e.amount_minor));
            Ok(p < 100)
        })
        .expect("scan");
        let expected: Vec<_> = (60..=100).map(|p| (p, Some(p - 4))).collect();
        assert_eq!(
            seen, expected,
            "from a position inside the first block, across into the second, until told to stop"
        );

        let mut reader = super::Reader::new(&conn);
        for p in [4 + len, 5, 69, 68, 70, 5 + super::BLOCK_LEN_MAX] {
            assert_eq!(reader.entry(p).expect("entry"), entry(p - 4), "position {p}");
        }
        assert!(reader.entry(5 + len).is_err(), "past the end is no entry");
        assert!(reader.entry(4).is_err(), "before the start is no entry");
    }

    #[test]
    fn a_cut_block_is_corrupt_not_a_panic() {
        let mut w = BlockWriter::default();
        w.start(1);
        w.append(&transfer(1));
        for cut in 0..w.data.len() {
            let mut c = Cursor { data: &w.data[..cut], at: 0 };
            assert!(c.entry(0).is_err(), "cut at {cut}");
        }
    }
}
