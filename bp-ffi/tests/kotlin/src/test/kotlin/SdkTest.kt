// The SDK's Kotlin bindings on the JVM against a real reference server (development mode, demo
// customers, on a free loopback port): sign-in through the login pages, profile, a payment
// signed by a device key, a retried payment that moves money once, external services and an
// event received live.

import java.io.File
import java.net.ServerSocket
import java.net.URI
import java.net.URLEncoder
import java.net.http.HttpClient
import java.net.http.HttpRequest
import java.net.http.HttpResponse
import java.nio.charset.StandardCharsets
import java.nio.file.Files
import java.util.concurrent.ConcurrentHashMap
import java.util.concurrent.CopyOnWriteArrayList
import java.util.concurrent.TimeUnit
import kotlinx.coroutines.runBlocking
import org.junit.jupiter.api.AfterAll
import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertNotNull
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.BeforeAll
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.TestInstance
import org.junit.jupiter.api.assertThrows
import uniffi.bp_ffi.*

class MemoryTokenStore : TokenStore {
    @Volatile var session: String? = null
    override fun load(): String? = session
    override fun save(session: String) { this.session = session }
    override fun clear() { session = null }
}

class MemoryAppStore(val values: MutableMap<String, String> = ConcurrentHashMap()) : AppStore {
    override fun get(key: String): String? = values[key]
    override fun put(key: String, value: String) { values[key] = value }
    override fun remove(key: String) { values.remove(key) }
    override fun keys(prefix: String): List<String> = values.keys.filter { it.startsWith(prefix) }
}

class Listener : EventListener {
    val events = CopyOnWriteArrayList<LiveEvent>()
    val statuses = CopyOnWriteArrayList<StreamStatus>()
    override fun onEvent(event: LiveEvent) { events.add(event) }
    override fun onStatus(status: StreamStatus) { statuses.add(status) }
}

fun waitFor(what: String, timeoutMs: Long = 20_000, condition: () -> Boolean) {
    val deadline = System.currentTimeMillis() + timeoutMs
    while (!condition()) {
        check(System.currentTimeMillis() < deadline) { "timed out waiting for $what" }
        Thread.sleep(50)
    }
}

/** The reference server in development mode, and the login pages driven over HTTP. */
class Server {
    val bin: String = System.getProperty("bp.server.bin")
    val dir: File = Files.createTempDirectory("bp-ffi-kotlin").toFile()
    val port = ServerSocket(0).use { it.localPort }
    val base = "http://127.0.0.1:$port"
    private val process: Process
    private val lastCode = HashMap<String, String>()
    val credentials: Map<String, Pair<String, String>>

    init {
        val pb = ProcessBuilder(bin).redirectErrorStream(true).redirectOutput(File(dir, "server.log"))
        pb.environment().remove("RUST_LOG")
        pb.environment()["BP_SERVER__LISTEN"] = "127.0.0.1:$port"
        pb.environment()["BP_STORAGE__DATA_DIR"] = dir.path
        pb.environment()["BP_AUTH__ARGON2_MEMORY_KIB"] = "8192"
        pb.environment()["BP_AUTH__ARGON2_ITERATIONS"] = "1"
        process = pb.start()
        val http = HttpClient.newBuilder().version(HttpClient.Version.HTTP_1_1).build()
        waitFor("the server", 60_000) {
            check(process.isAlive) { "the server exited; see ${dir.path}/server.log" }
            runCatching {
                http.send(HttpRequest.newBuilder(URI("$base/readyz")).build(), HttpResponse.BodyHandlers.discarding()).statusCode() == 200
            }.getOrDefault(false)
        }
        val json = File(dir, "demo-credentials.txt").readLines().first { it.startsWith("JSON ") }.removePrefix("JSON ")
        // [{"username":"ada","password":"…","totp_secret":"…"},…] read without a JSON library.
        credentials = Regex("""\{[^}]*\}""").findAll(json).associate { m ->
            fun field(name: String) = Regex("\"$name\"\\s*:\\s*\"([^\"]*)\"").find(m.value)!!.groupValues[1]
            field("username") to (field("password") to field("totp_secret"))
        }
    }

    fun stop() {
        process.destroy()
        if (!process.waitFor(20, TimeUnit.SECONDS)) process.destroyForcibly().waitFor()
        dir.deleteRecursively()
    }

    fun config() = ClientConfig(base, "bp-mobile", "bp.mobile://oauth/callback", null)

    /** A TOTP code of [username] not used before (a code is accepted once). */
    fun totp(username: String): String {
        val deadline = System.currentTimeMillis() + 45_000
        while (true) {
            val p = ProcessBuilder(bin, "totp", credentials.getValue(username).second).start()
            val code = p.inputStream.bufferedReader().readText().trim()
            p.waitFor()
            if (code != lastCode[username]) {
                lastCode[username] = code
                return code
            }
            check(System.currentTimeMillis() < deadline) { "no new TOTP code" }
            Thread.sleep(1_000)
        }
    }

    /** What the system browser and the customer do; returns the redirect to the app. */
    fun browserSignIn(url: String, username: String): String {
        // The login form's cookie, kept by hand: java.net's CookieManager does not send it back
        // to an IP address host here.
        val http = HttpClient.newBuilder().version(HttpClient.Version.HTTP_1_1)
            .followRedirects(HttpClient.Redirect.NEVER).build()
        val first = http.send(HttpRequest.newBuilder(URI(url)).build(), HttpResponse.BodyHandlers.ofString())
        val cookie = first.headers().allValues("set-cookie").joinToString("; ") { it.substringBefore(';') }
        val page = first.body()
        val tx = Regex("""name="tx" value="([^"]*)"""").find(page)!!.groupValues[1]
        fun post(path: String, fields: Map<String, String>): HttpResponse<String> {
            val form = fields.entries.joinToString("&") { (k, v) ->
                URLEncoder.encode(k, StandardCharsets.UTF_8) + "=" + URLEncoder.encode(v, StandardCharsets.UTF_8)
            }
            val request = HttpRequest.newBuilder(URI("$base$path"))
                .header("content-type", "application/x-www-form-urlencoded")
                .header("cookie", cookie)
                .POST(HttpRequest.BodyPublishers.ofString(form)).build()
            return http.send(request, HttpResponse.BodyHandlers.ofString())
        }
        val password = post("/oauth2/login/password", mapOf("tx" to tx, "username" to username, "password" to credentials.getValue(username).first))
        check(password.statusCode() in 200..399) { "the password page answered ${password.statusCode()}" }
        val answer = post("/oauth2/login/second-factor", mapOf("tx" to tx, "code" to totp(username)))
        val location = answer.headers().firstValue("location").orElseThrow { IllegalStateException("the second factor answered ${answer.statusCode()}") }
        check(location.startsWith("bp.mobile://oauth/callback")) { "no redirect to the app" }
        return location
    }
}

class App(
    val server: Server,
    val tokens: MemoryTokenStore = MemoryTokenStore(),
    val store: MemoryAppStore = MemoryAppStore(),
    val dpopKey: SoftwareSigner = SoftwareSigner.generate(),
    val scaKey: SoftwareSigner = SoftwareSigner.generate(),
) {
    val sdk = BpSdk(server.config(), tokens, dpopKey, scaKey, store)

    suspend fun signIn(username: String): String =
        sdk.completeSignIn(server.browserSignIn(sdk.beginSignIn(), username))

    suspend fun registerDevice(username: String): Device =
        sdk.confirmDeviceWithTotp(sdk.registerDevice("Kotlin phone"), server.totp(username))
}

fun eur(accounts: List<Account>) = accounts.first { it.posted.currency == "EUR" }

@TestInstance(TestInstance.Lifecycle.PER_CLASS)
class SdkTest {
    private lateinit var server: Server

    @BeforeAll fun start() { server = Server() }
    @AfterAll fun stop() { server.stop() }

    @Test
    fun `sign in, profile, a signed payment, a retry that moves money once, and a live event`() = runBlocking<Unit> {
        val bob = App(server)
        bob.signIn("bob")
        val bobEur = eur(bob.sdk.accounts())
        val listener = Listener()
        val stream = bob.sdk.watchEvents(listener, null)
        waitFor("the stream") { listener.statuses.contains(StreamStatus.Connected) }

        val ada = App(server)
        assertThrows<BpException.SignedOut> { runBlocking { ada.sdk.accounts() } }
        val customerId = ada.signIn("ada")
        val profile = ada.sdk.profile()
        assertEquals("ada", profile.username)
        assertEquals(customerId, profile.customerId)
        val before = eur(ada.sdk.accounts())

        val device = ada.registerDevice("ada")
        assertEquals(device.id, ada.sdk.deviceId())
        val intent = ada.sdk.prepareTransfer(TransferDraft(before.id, bobEur.number, Amount(25_000L, "EUR"), "rent"))
        val outcome = ada.sdk.sendPayment(intent.id)
        assertTrue(outcome is PaymentOutcome.NeedsConfirmation, "$outcome")
        outcome as PaymentOutcome.NeedsConfirmation
        assertEquals("Pay 250.00 EUR to account ${bobEur.number}", outcome.confirmation.summary)
        assertEquals("posted", (ada.sdk.confirmPayment(intent.id) as PaymentOutcome.Done).transfer.state)
        waitFor("the payment's event on bob's stream") { listener.events.any { it.data.contains(outcome.transferId) } }

        // The app dies after the bank posted the payment but before the SDK forgot it.
        val retried = ada.sdk.prepareTransfer(TransferDraft(before.id, bobEur.number, Amount(1_000L, "EUR"), null))
        val saved = HashMap(ada.store.values)
        val first = ada.sdk.sendPayment(retried.id) as PaymentOutcome.Done
        ada.store.values.clear()
        ada.store.values.putAll(saved)
        val restarted = App(server, ada.tokens, ada.store, ada.dpopKey, ada.scaKey)
        assertEquals(listOf(retried.id), restarted.sdk.pendingPayments().map { it.id })
        val second = restarted.sdk.sendPayment(retried.id) as PaymentOutcome.Done
        assertEquals(first.transfer.id, second.transfer.id)
        assertEquals(before.posted.amountMinor - 26_000, eur(restarted.sdk.accounts()).posted.amountMinor)

        // External services: the demo loan and its schedule, and a payment to another bank.
        val loans = restarted.sdk.services("loan", null)
        assertTrue(loans.connected)
        val loan = restarted.sdk.loan(loans.services.first().id)
        assertEquals(loan.amount.amountMinor, loan.schedule.sumOf { it.principal.amountMinor })
        val sepa = restarted.sdk.prepareInterbank(
            InterbankDraft(before.id, "DE89 3704 0044 0532 0130 00", "Erika Mustermann", null, Amount(2_000L, "EUR"), null),
        )
        when (val sent = restarted.sdk.sendPayment(sepa.id)) {
            is PaymentOutcome.Done -> assertNotNull(sent.serviceId)
            is PaymentOutcome.NeedsConfirmation -> restarted.sdk.confirmPayment(sepa.id)
        }
        assertTrue(restarted.sdk.services("interbank_transfer", null).services.any { it.amount.amountMinor == 2_000L })

        stream.stop()
        waitFor("the stream's end") { listener.statuses.contains(StreamStatus.Ended(StreamEnd.STOPPED)) }
        restarted.sdk.signOut()
        assertThrows<BpException.SignedOut> { runBlocking { restarted.sdk.accounts() } }
    }
}
