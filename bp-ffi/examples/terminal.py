"""A terminal banking app on the SDK's Python bindings: signs in to the demo server, shows the
balances, pays with a software device key (after you confirm the exact text), and prints live
events until Ctrl-C.

    cargo run -p bp-server-example                       # the demo server, in another terminal
    scripts/ffi-example.sh [base-url] [username]         # builds the bindings, then runs this

It signs in as the mobile client `bp-mobile`. A phone opens the authorization URL in the system
browser and receives the redirect to `bp.mobile://oauth/callback`; a terminal has neither, so
this program fills in the same login pages over HTTP with the demo customer's password and a
TOTP code from the server binary's `totp` command (data/demo-credentials.txt has both), the way
the SDK's tests do. Keys and tokens live in memory: each run is a new "phone".
"""

import asyncio
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "python"))

import bp_ffi  # noqa: E402  (generated next to the library by scripts/ffi-example.sh)
from bank import App, Server  # noqa: E402


class DemoServer(Server):
    """A server someone else started: only its URL and demo credentials."""

    def __init__(self, base, credentials_path, binary):
        import json

        self.base = base
        self.binary = binary
        self.last_code = {}
        with open(credentials_path) as f:
            line = next(l for l in f if l.startswith("JSON "))
        self.credentials = {c["username"]: c for c in json.loads(line[5:])}

    def stop(self):
        pass


class Printer(bp_ffi.EventListener):
    def on_event(self, event):
        print(f"  event {event.kind}: {event.data[:160]}")

    def on_status(self, status):
        print(f"  stream: {status}")


def money(amount):
    digits = {"JPY": 0}.get(amount.currency, 2)
    sign = "-" if amount.amount_minor < 0 else ""
    units, cents = divmod(abs(amount.amount_minor), 10**digits) if digits else (abs(amount.amount_minor), None)
    return f"{sign}{units}{'' if cents is None else '.' + str(cents).zfill(digits)} {amount.currency}"


def parse_cents(text):
    """Whole cents of a decimal text ("250", "250.5", "250.00"): money is never a float."""
    units, _, fraction = text.strip().partition(".")
    if not units.isdigit() or len(fraction) > 2 or (fraction and not fraction.isdigit()):
        raise SystemExit(f"not an amount: {text!r}")
    return int(units) * 100 + int(fraction.ljust(2, "0") or 0)


async def main():
    base = sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8080"
    username = sys.argv[2] if len(sys.argv) > 2 else "ada"
    credentials = os.environ.get("BP_CREDENTIALS", "data/demo-credentials.txt")
    if not os.path.exists(credentials):
        raise SystemExit(f"no demo credentials at {credentials}: set BP_CREDENTIALS to the demo-credentials.txt "
                         "in the data folder of the server you started")
    server = DemoServer(base, credentials, os.environ["BP_SERVER_BIN"])
    app = App(server)

    print(f"Signing in to {base} as {username} (PKCE, DPoP-bound tokens)…")
    await app.sign_in(username)
    profile = await app.sdk.profile()
    print(f"Hello, {profile.display_name}.")
    accounts = await app.sdk.accounts()
    for a in accounts:
        print(f"  {a.number}  {money(a.available):>16} available  ({money(a.posted)} posted)")

    listener = Printer()
    stream = await app.sdk.watch_events(listener, None)
    # The stream calls back into Python from the SDK's threads: it is stopped before the
    # interpreter exits, whatever happens (an exit with it running can abort the process).
    try:
        await pay_and_watch(app, username, accounts)
    except bp_ffi.BpError as e:
        print(f"The bank refused: {e}")
    finally:
        stream.stop()
        await app.sdk.sign_out()
        print("Signed out.")


async def pay_and_watch(app, username, accounts):
    payee = input("Pay to account number (empty to skip): ").strip()
    if payee:
        eur = next(a for a in accounts if a.posted.currency == "EUR")
        cents = parse_cents(input("Amount in EUR (e.g. 250.00): "))
        # Checked and stored first, so a wrong account number registers no device key.
        intent = app.sdk.prepare_transfer(bp_ffi.TransferDraft(
            from_account_id=eur.id, to_account_number=payee,
            amount=bp_ffi.Amount(amount_minor=cents, currency="EUR"), reference="from the terminal"))
        if app.sdk.device_id() is None:
            print("Registering this terminal's software device key (a TOTP code confirms it)…")
            await app.register_device(username)
        outcome = await app.sdk.send_payment(intent.id)
        if isinstance(outcome, bp_ffi.PaymentOutcome.NEEDS_CONFIRMATION):
            print("Confirm with your device key:\n  " + outcome.confirmation.summary)
            print("  (the signed text:)\n    " + outcome.confirmation.text.replace("\n", "\n    "))
            if input("Confirm? [y/N] ").strip().lower() == "y":
                confirmed = await app.sdk.confirm_payment(intent.id)
                print(f"Payment {confirmed.transfer.state}.")
            else:
                app.sdk.forget_payment(intent.id)
                print("Not confirmed; the bank voids it when its challenge expires.")
        else:
            print(f"Payment {outcome.transfer.state} (exemption: {outcome.exemption}).")

    seconds = int(os.environ.get("BP_EXAMPLE_EVENTS_S", "0"))
    print(f"Live events ({f'for {seconds} s' if seconds else 'Ctrl-C to stop'})…")
    await asyncio.sleep(seconds or 10**9)


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
