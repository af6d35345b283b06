"""Checks the generated Swift bindings for the declarations an iOS app relies on (there is no
Swift toolchain on this machine to compile them): the SDK object and its async calls, the
host protocols, the records and enums, and the error enum with every case an app acts on.

    python3 check_swift.py bp_ffi.swift bp_ffiFFI.h
"""

import re
import sys

swift_path, header_path = sys.argv[1], sys.argv[2]
swift = open(swift_path, encoding="utf-8").read()
# Doc comments sit between a declaration's parts; compare the code alone, one space for any run.
swift = re.sub(r"/\*.*?\*/", " ", swift, flags=re.S)
swift = re.sub(r"\s+", " ", swift)
header = open(header_path, encoding="utf-8").read()

EXPECTED = [
    # The SDK and its calls, async and throwing where they reach the server.
    r"open class BpSdk\b",
    r"public convenience init\(config: ClientConfig, tokens: TokenStore, dpopKey: DeviceSigner, scaKey: DeviceSigner, store: AppStore\)\s*throws",
    r"open func beginSignIn\(\)\s*async throws\s*-> String",
    r"open func completeSignIn\(redirectUrl: String\)\s*async throws\s*-> String",
    r"open func signOut\(\)\s*async throws",
    r"open func profile\(\)\s*async throws\s*-> Profile",
    r"open func photo\(\)\s*async throws\s*-> Data\?",
    r"open func accounts\(\)\s*async throws\s*-> \[Account\]",
    r"open func history\(accountId: String, filter: HistoryFilter\)\s*async throws\s*-> HistoryPage",
    r"open func registerDevice\(name: String\)\s*async throws\s*-> DeviceEnrolment",
    r"open func prepareTransfer\(draft: TransferDraft\)\s*throws\s*-> PaymentIntent",
    r"open func sendPayment\(paymentId: String\)\s*async throws\s*-> PaymentOutcome",
    r"open func confirmPayment\(paymentId: String\)\s*async throws\s*-> PaymentOutcome",
    r"open func pendingPayments\(\)\s*throws\s*-> \[PaymentIntent\]",
    r"open func fxQuote\(fromAccountId: String, amount: Amount, targetCurrency: String\)\s*async throws\s*-> FxQuote",
    r"open func loan\(loanId: String\)\s*async throws\s*-> Loan",
    r"open func applyForLoan\(application: LoanApplication\)\s*async throws\s*-> Loan",
    r"open func repayLoan\(loanId: String, repayment: LoanRepayment\)\s*async throws\s*-> Loan",
    r"open func watchEvents\(listener: EventListener, lastEventId: String\?\)\s*async\s*-> EventStream",
    r"open func stop\(\)",
    # What the app implements.
    r"public protocol TokenStore: AnyObject, Sendable",
    r"func save\(session: String\) throws",
    r"public protocol DeviceSigner: AnyObject, Sendable",
    r"func publicKey\(\) throws\s*-> Data",
    r"func sign\(message: Data\) throws\s*-> Data",
    r"public protocol AppStore: AnyObject, Sendable",
    r"public protocol EventListener: AnyObject, Sendable",
    r"func onEvent\(event: LiveEvent\)",
    # Records and enums: money as integer minor units.
    r"public struct Amount\b",
    r"public var amountMinor: Int64",
    r"public enum PaymentOutcome\b",
    r"case needsConfirmation\(",
    r"public enum StreamStatus\b",
    r"public enum LoanRepayment\b",
    r"case partial\(",
    r"case full\b",
    # The error enum, every case an app acts on.
    r"public enum BpError\b",
    r"case Network\b",
    r"case SignedOut\b",
    r"case ScaRequired\b",
    r"case InsufficientFunds\b",
    r"case Conflict\b",
    r"case InvalidInput\( ?field: String",
    r"case RateLimited\( ?retryAfterS: UInt64",
    r"case Device\b",
    r"case Server\b",
    r"public enum HostError\b",
]

missing = [p for p in EXPECTED if not re.search(p, swift)]
# The C header the Swift module imports declares the scaffolding's functions.
if not re.search(r"uniffi_bp_ffi_fn_constructor_bpsdk_new", header):
    missing.append("the header's BpSdk constructor")
if missing:
    print("missing Swift declarations:\n  " + "\n  ".join(missing))
    sys.exit(1)
print(f"Swift: {len(EXPECTED) + 1} expected declarations present")
