"""The SDK's Python bindings against a real reference server: sign-in through the login pages,
profile, a payment signed by a device key, a retried payment that moves money once, external
services, live events, refresh and sign-out. Run by scripts/ffi-test.sh, which builds the
library, generates the bindings next to it and sets BP_SERVER_BIN."""

import asyncio
import json
import threading
import urllib.parse

import pytest

import bp_ffi
from bank import App, Server

EUR = "EUR"


@pytest.fixture(scope="module")
def server():
    s = Server()
    yield s
    s.stop()


def run(coroutine):
    return asyncio.run(coroutine)


def eur_account(accounts):
    return next(a for a in accounts if a.posted.currency == EUR)


def test_sign_in_profile_and_accounts(server):
    async def go():
        app = App(server)
        assert not await app.sdk.is_signed_in()
        with pytest.raises(bp_ffi.BpError.SignedOut):
            await app.sdk.accounts()
        url = await app.sdk.begin_sign_in()
        assert "code_challenge_method=S256" in url and "nonce=" in url and "state=" in url
        customer_id = await app.sign_in("ada")
        assert await app.sdk.is_signed_in()
        session = json.loads(app.tokens.session)
        assert session["customer_id"] == customer_id
        profile = await app.sdk.profile()
        assert profile.username == "ada"
        assert profile.customer_id == customer_id
        assert profile.party_kind == "person"
        photo = await app.sdk.photo()
        assert (photo is not None) == profile.has_photo
        if photo is not None:
            assert photo[:4] in (b"\x89PNG", b"\xff\xd8\xff\xe0", b"\xff\xd8\xff\xe1", b"\xff\xd8\xff\xdb") or len(photo) > 0
        accounts = await app.sdk.accounts()
        assert {a.posted.currency for a in accounts} >= {"EUR", "USD"}
        eur = eur_account(accounts)
        assert eur.available.amount_minor > 0
        page = await app.sdk.history(eur.id, bp_ffi.HistoryFilter(posted_from=None, posted_before=None, direction="credit",
                                                               amount_min=None, amount_max=None, cursor=None, limit=2))
        assert len(page.items) <= 2
        assert all(t.direction == "credit" for t in page.items)

    run(go())


def test_a_redirect_of_another_sign_in_is_refused(server):
    async def go():
        app = App(server)
        url = await app.sdk.begin_sign_in()
        redirect = server.browser_sign_in(url, "bob")
        forged = redirect.replace("state=", "state=x")
        with pytest.raises(bp_ffi.BpError.SignedOut):
            await app.sdk.complete_sign_in(forged)
        # The pending sign-in is spent by the refused redirect: the genuine one is refused too.
        with pytest.raises(bp_ffi.BpError.SignedOut):
            await app.sdk.complete_sign_in(redirect)
        assert not await app.sdk.is_signed_in()

        # A genuine code and state, but the redirect names another issuer (a mix-up, RFC 9207):
        # refused, so the code is never exchanged.
        url = await app.sdk.begin_sign_in()
        redirect = server.browser_sign_in(url, "acme")
        iss = urllib.parse.parse_qs(urllib.parse.urlparse(redirect).query)["iss"][0]
        mixed_up = redirect.replace(urllib.parse.quote(iss, safe=""), urllib.parse.quote("http://127.0.0.1:1", safe=""))
        assert mixed_up != redirect
        with pytest.raises(bp_ffi.BpError.SignedOut):
            await app.sdk.complete_sign_in(mixed_up)
        assert not await app.sdk.is_signed_in()

    run(go())


def test_a_payment_signed_by_the_device_key_and_a_retry_that_moves_money_once(server):
    async def go():
        bob = App(server)
        await bob.sign_in("bob")
        bob_eur = eur_account(await bob.sdk.accounts())

        ada = App(server)
        await ada.sign_in("ada")
        device = await ada.register_device("ada")
        assert ada.sdk.device_id() == device.id
        assert device.id in [d.id for d in await ada.sdk.devices()]
        ada_eur = eur_account(await ada.sdk.accounts())

        # Over the low-value exemption: the customer confirms, the device key signs.
        draft = bp_ffi.TransferDraft(from_account_id=ada_eur.id, to_account_number=bob_eur.number,
                                     amount=bp_ffi.Amount(amount_minor=25_000, currency=EUR), reference="rent")
        intent = ada.sdk.prepare_transfer(draft)
        assert [p.id for p in ada.sdk.pending_payments()] == [intent.id], "stored before it is sent"
        outcome = await ada.sdk.send_payment(intent.id)
        assert isinstance(outcome, bp_ffi.PaymentOutcome.NEEDS_CONFIRMATION), outcome
        assert outcome.confirmation.summary == f"Pay 250.00 EUR to account {bob_eur.number}"
        assert "amount:250.00" in outcome.confirmation.text.splitlines()
        assert ada.sdk.pending_payments()[0].awaiting_confirmation
        confirmed = await ada.sdk.confirm_payment(intent.id)
        assert isinstance(confirmed, bp_ffi.PaymentOutcome.DONE) and confirmed.transfer.state == "posted", confirmed
        assert ada.sdk.pending_payments() == []
        after = eur_account(await ada.sdk.accounts())
        assert after.posted.amount_minor == ada_eur.posted.amount_minor - 25_000

        # A retry after the app died between the bank's answer and forgetting the payment:
        # the restarted app finds the payment and sends it again with the same key.
        small = bp_ffi.TransferDraft(from_account_id=ada_eur.id, to_account_number=bob_eur.number,
                                     amount=bp_ffi.Amount(amount_minor=1_000, currency=EUR), reference=None)
        retried = ada.sdk.prepare_transfer(small)
        saved = dict(ada.store.values)
        first = await ada.sdk.send_payment(retried.id)
        assert isinstance(first, bp_ffi.PaymentOutcome.DONE) and first.transfer.state == "posted", first
        ada.store.values = saved
        restarted = ada.restarted()
        assert [p.id for p in restarted.sdk.pending_payments()] == [retried.id]
        second = await restarted.sdk.send_payment(retried.id)
        assert isinstance(second, bp_ffi.PaymentOutcome.DONE)
        assert second.transfer.id == first.transfer.id, "the same transfer, not a second one"
        final = eur_account(await restarted.sdk.accounts())
        assert final.posted.amount_minor == after.posted.amount_minor - 1_000, "money moved once"
        bob_after = eur_account(await bob.sdk.accounts())
        assert bob_after.posted.amount_minor == bob_eur.posted.amount_minor + 26_000

        # Insufficient funds is an answer the app can act on, and it is final.
        too_much = bp_ffi.TransferDraft(from_account_id=ada_eur.id, to_account_number=bob_eur.number,
                                        amount=bp_ffi.Amount(amount_minor=10**13, currency=EUR), reference=None)
        doomed = restarted.sdk.prepare_transfer(too_much)
        with pytest.raises(bp_ffi.BpError.InsufficientFunds):
            await restarted.sdk.send_payment(doomed.id)
        assert restarted.sdk.pending_payments() == []
        with pytest.raises(bp_ffi.BpError.InvalidInput) as e:
            restarted.sdk.prepare_transfer(bp_ffi.TransferDraft(from_account_id=ada_eur.id, to_account_number="12",
                                                                amount=bp_ffi.Amount(amount_minor=1, currency=EUR),
                                                                reference=None))
        assert e.value.field == "to_account_number"

    run(go())


def test_external_services(server):
    async def go():
        acme = App(server)
        await acme.sign_in("acme")
        eur = eur_account(await acme.sdk.accounts())
        services = await acme.sdk.services(None, None)
        assert services.connected
        loans = await acme.sdk.services("loan", None)
        assert loans.services, "the demo customer has a running loan"
        loan = await acme.sdk.loan(loans.services[0].id)
        assert loan.schedule and loan.schedule[0].total.currency == loan.amount.currency
        assert sum(i.principal.amount_minor for i in loan.schedule) == loan.amount.amount_minor

        draft = bp_ffi.InterbankDraft(from_account_id=eur.id, to_iban="DE89 3704 0044 0532 0130 00",
                                      to_name="Erika Mustermann", to_bic=None,
                                      amount=bp_ffi.Amount(amount_minor=2_000, currency=EUR), reference="invoice 7")
        intent = acme.sdk.prepare_interbank(draft)
        outcome = await acme.sdk.send_payment(intent.id)
        if isinstance(outcome, bp_ffi.PaymentOutcome.NEEDS_CONFIRMATION):
            assert "DE89370400440532013000" in outcome.confirmation.text
            await acme.register_device("acme")
            await acme.sdk.confirm_payment(intent.id)
        else:
            assert outcome.service_id is not None
        sent = await acme.sdk.services("interbank_transfer", None)
        assert any(s.amount.amount_minor == 2_000 for s in sent.services)

        # The server names the member at fault, and the SDK passes its name on.
        with pytest.raises(bp_ffi.BpError.InvalidInput) as e:
            await acme.sdk.apply_for_loan(bp_ffi.LoanApplication(
                account_id=eur.id, amount=bp_ffi.Amount(amount_minor=120_000, currency=EUR), term_months=0,
                purpose="a new laptop"))
        assert e.value.field == "term_months"
        assert not acme.store.keys("bp.request."), "a final answer: nothing kept for a retry"

        # A loan: applied for, decided by the provider's simulator, its offer confirmed and
        # signed by the device key, then disbursed with a schedule. The application's key was
        # stored before it was sent: made again by the app restarted after a lost answer, it
        # is the same loan.
        application = bp_ffi.LoanApplication(
            account_id=eur.id, amount=bp_ffi.Amount(amount_minor=120_000, currency=EUR), term_months=12,
            purpose="a new laptop")
        written = len(acme.store.written)
        applied = await acme.sdk.apply_for_loan(application)
        restarted = acme.crashed_after(written, "bp.request.")
        again = await restarted.sdk.apply_for_loan(application)
        assert again.id == applied.id, "the same application, not a second one"
        assert not acme.store.keys("bp.request.")
        for _ in range(100):
            offered = await acme.sdk.loan(applied.id)
            if offered.status == "offered":
                break
            await asyncio.sleep(0.2)
        assert offered.status == "offered" and offered.term_months == 12, offered
        confirmation = await acme.sdk.accept_loan_offer(applied.id)
        assert confirmation.summary.startswith("Borrow 1200.00 EUR over 12 months"), confirmation.summary
        if acme.sdk.device_id() is None:
            await acme.register_device("acme")
        accepted = await acme.sdk.confirm_loan_offer(applied.id)
        assert accepted.status not in ("offered", "rejected"), accepted
        with pytest.raises(bp_ffi.BpError.InvalidInput):
            await acme.sdk.confirm_loan_offer(applied.id)

        # Repaid early: more than is owed is refused naming the amount; a repayment retried
        # after a restart moves money once; in full, the loan closes.
        too_much = bp_ffi.Amount(amount_minor=accepted.outstanding.amount_minor + 1, currency=EUR)
        with pytest.raises(bp_ffi.BpError.InvalidInput) as e:
            await acme.sdk.repay_loan(applied.id, bp_ffi.LoanRepayment.PARTIAL(too_much))
        assert e.value.field == "amount"
        part = bp_ffi.LoanRepayment.PARTIAL(bp_ffi.Amount(amount_minor=10_000, currency=EUR))
        written = len(acme.store.written)
        repaid = await acme.sdk.repay_loan(applied.id, part)
        assert repaid.outstanding.amount_minor == accepted.outstanding.amount_minor - 10_000, repaid
        restarted = acme.crashed_after(written, "bp.request.")
        again = await restarted.sdk.repay_loan(applied.id, part)
        assert again.outstanding == repaid.outstanding, "repaid once"
        now = await restarted.sdk.loan(applied.id)
        assert now.outstanding.amount_minor == accepted.outstanding.amount_minor - 10_000, "money moved once"
        closed = await restarted.sdk.repay_loan(applied.id, bp_ffi.LoanRepayment.FULL())
        assert closed.status == "closed" and closed.outstanding.amount_minor == 0, closed
        assert not acme.store.keys("bp.request.")

        quote = await acme.sdk.fx_quote(eur.id, bp_ffi.Amount(amount_minor=10_000, currency=EUR), "CHF")
        assert quote.debit.amount_minor == quote.source.amount_minor + quote.fee.amount_minor
        assert quote.target.currency == "CHF"

    run(go())


class Listener(bp_ffi.EventListener):
    def __init__(self):
        self.events = []
        self.statuses = []
        self.changed = threading.Condition()

    def on_event(self, event):
        with self.changed:
            self.events.append(event)
            self.changed.notify_all()

    def on_status(self, status):
        with self.changed:
            self.statuses.append(status)
            self.changed.notify_all()

    def wait(self, what, timeout_s=20):
        with self.changed:
            assert self.changed.wait_for(what, timeout=timeout_s), f"events {self.events} statuses {self.statuses}"


def test_an_event_received_live_then_refresh_and_sign_out(server):
    async def go():
        bob = App(server)
        await bob.sign_in("bob")
        bob_eur = eur_account(await bob.sdk.accounts())
        listener = Listener()
        stream = await bob.sdk.watch_events(listener, None)
        await asyncio.to_thread(listener.wait, lambda: bp_ffi.StreamStatus.CONNECTED() in listener.statuses)

        payer = App(server)
        await payer.sign_in("acme")
        payer_eur = eur_account(await payer.sdk.accounts())
        draft = bp_ffi.TransferDraft(from_account_id=payer_eur.id, to_account_number=bob_eur.number,
                                     amount=bp_ffi.Amount(amount_minor=1_234, currency=EUR), reference="live")
        outcome = await payer.sdk.send_payment(payer.sdk.prepare_transfer(draft).id)
        assert isinstance(outcome, bp_ffi.PaymentOutcome.DONE), outcome
        transfer_id = outcome.transfer.id

        def arrived():
            return any(transfer_id in e.data for e in listener.events)

        await asyncio.to_thread(listener.wait, arrived)
        event = next(e for e in listener.events if transfer_id in e.data)
        assert event.id, "an event carries its resume cursor"
        json.loads(event.data)
        stream.stop()
        await asyncio.to_thread(listener.wait, lambda: bp_ffi.StreamStatus.ENDED(reason=bp_ffi.StreamEnd.STOPPED) in listener.statuses)

        # Two refreshes at once: one refresh is sent; a second with the same (rotated) refresh
        # token would be a reuse, and the server would end the session.
        saved = bob.tokens.session
        await asyncio.gather(bob.sdk.refresh(), bob.sdk.refresh())
        rotated = bob.tokens.session != saved  # compared apart, so a failure prints no token
        assert rotated, "the refresh token rotated"
        assert eur_account(await bob.sdk.accounts()).id == bob_eur.id

        await bob.sdk.sign_out()
        assert bob.tokens.session is None
        with pytest.raises(bp_ffi.BpError.SignedOut):
            await bob.sdk.accounts()
        # The revoked session is dead at the bank too: its saved tokens no longer work.
        replay = App(server)
        replay.tokens.session = saved
        replay.dpop_key = bob.dpop_key
        replay = App(server, tokens=replay.tokens, dpop_key=bob.dpop_key)
        with pytest.raises(bp_ffi.BpError.SignedOut):
            await replay.sdk.refresh()

    run(go())
