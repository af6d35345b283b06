//! Stream cursors, the SSE `id` of each event: `v2.<audit>.<seq>.<seq>…`, the audit log position
//! of the last security event delivered, then the last sequence number delivered per account, in
//! the stream's account order (opening order). A client that reconnects with `Last-Event-ID`
//! resumes exactly after it.

use bp_core::ids::AccountId;

/// A stream cursor, `v2.<audit>.<seq>.<seq>…`: the audit log position of the last security event
/// delivered, then the last sequence number delivered per account, in the stream's account order.
pub(super) fn write_cursor(out: &mut Vec<u8>, audit: u64, positions: &[u64]) {
    use std::io::Write as _;
    // Writing into a Vec cannot fail.
    let _ = write!(out, "v2.{audit}");
    for p in positions {
        let _ = write!(out, ".{p}");
    }
}

/// The audit position and per-account sequence numbers of a cursor (`None` for the audit
/// position of a `v1` cursor, which had none).
pub fn parse_cursor(id: &str, accounts: &[AccountId]) -> Option<(Option<u64>, Vec<u64>)> {
    let mut parts = id.trim().split('.');
    let audit = match parts.next()? {
        "v1" => None,
        "v2" => Some(parts.next()?.parse().ok()?),
        _ => return None,
    };
    let seqs: Vec<u64> = parts.map(|p| p.parse().ok()).collect::<Option<_>>()?;
    // Accounts opened since the cursor was made start from the beginning.
    (seqs.len() <= accounts.len())
        .then(|| (audit, accounts.iter().enumerate().map(|(i, _)| seqs.get(i).copied().unwrap_or(0)).collect()))
}
