// Test cases for bp-no-print-in-library (`semgrep --test .semgrep/`).

fn post(transfer: &Transfer) -> Result<(), StoreError> {
    // ruleid: bp-no-print-in-library
    println!("posting {}", transfer.id);
    // ruleid: bp-no-print-in-library
    eprintln!("store failed: {e}");
    // ruleid: bp-no-print-in-library
    print!("{}", transfer.amount);
    // ruleid: bp-no-print-in-library
    eprint!("password: ");
    // ruleid: bp-no-print-in-library
    let t = dbg!(transfer);
    // ok: bp-no-print-in-library
    tracing::info!(transfer = %transfer.id, "posted");
    // ok: bp-no-print-in-library
    let text = format!("posted {}", transfer.id);
    // ok: bp-no-print-in-library
    writeln!(out, "{text}")?;
    Ok(())
}
