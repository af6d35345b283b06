"""A real reference server for the SDK's Python tests and example, and the sign-in driven over
HTTP in place of the system browser.

The server is the workspace's binary in development mode (demo customers ada, bob and acme,
the simulator of the outside parties) on a free loopback port over a temporary data folder.
Its path comes from BP_SERVER_BIN. TOTP codes come from the binary's `totp` command.
"""

import http.cookiejar
import json
import os
import re
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

import bp_ffi

CLIENT_ID = "bp-mobile"
REDIRECT_URI = "bp.mobile://oauth/callback"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """The reference server in development mode, started and stopped by the caller."""

    def __init__(self, binary=None):
        self.binary = binary or os.environ["BP_SERVER_BIN"]
        self.dir = tempfile.TemporaryDirectory(prefix="bp-ffi-")
        self.base = f"http://127.0.0.1:{free_port()}"
        self.last_code = {}
        env = dict(os.environ)
        env.pop("RUST_LOG", None)
        env.update(
            BP_SERVER__LISTEN=self.base.removeprefix("http://"),
            BP_STORAGE__DATA_DIR=self.dir.name,
            # Fast password hashing for tests only.
            BP_AUTH__ARGON2_MEMORY_KIB="8192",
            BP_AUTH__ARGON2_ITERATIONS="1",
        )
        self.log = open(os.path.join(self.dir.name, "server.log"), "wb")
        self.process = subprocess.Popen([self.binary], env=env, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(self.base + "/readyz", timeout=2) as r:
                    if r.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the server did not start (log in {self.dir.name}/server.log)")
            time.sleep(0.2)
        with open(os.path.join(self.dir.name, "demo-credentials.txt")) as f:
            line = next(l for l in f if l.startswith("JSON "))
        self.credentials = {c["username"]: c for c in json.loads(line[5:])}

    def stop(self):
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()
        self.dir.cleanup()

    def config(self):
        return bp_ffi.ClientConfig(base_url=self.base, client_id=CLIENT_ID, redirect_uri=REDIRECT_URI, scope=None)

    def totp(self, username):
        """A TOTP code of `username` not used before: a code is accepted once, so a second one
        within the same 30-second step waits for the next step."""
        secret = self.credentials[username]["totp_secret"]
        deadline = time.monotonic() + 45
        while True:
            code = subprocess.run([self.binary, "totp", secret], check=True, capture_output=True, text=True).stdout.strip()
            if code != self.last_code.get(username):
                self.last_code[username] = code
                return code
            if time.monotonic() > deadline:
                raise RuntimeError("no new TOTP code within 45 s")
            time.sleep(1)

    def browser_sign_in(self, authorization_url, username):
        """What the system browser and the customer do: the login form, the password, the TOTP
        code; returns the redirect URL the app receives."""
        jar = http.cookiejar.CookieJar()

        class NoRedirect(urllib.request.HTTPRedirectHandler):
            def redirect_request(self, *args, **kwargs):
                return None

        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar), NoRedirect)
        with opener.open(authorization_url, timeout=10) as r:
            page = r.read().decode()
        tx = re.search(r'name="tx" value="([^"]*)"', page).group(1)
        password = self.credentials[username]["password"]
        self._post(opener, "/oauth2/login/password", {"tx": tx, "username": username, "password": password})
        answer = self._post(opener, "/oauth2/login/second-factor", {"tx": tx, "code": self.totp(username)})
        location = answer.headers.get("Location")
        assert location and location.startswith(REDIRECT_URI), f"no redirect to the app (status {answer.status})"
        return location

    def _post(self, opener, path, fields):
        data = urllib.parse.urlencode(fields).encode()
        try:
            with opener.open(self.base + path, data=data, timeout=10) as r:
                r.read()
                return r
        except urllib.error.HTTPError as e:  # the 303 to the next page or to the app
            if e.code in (302, 303):
                return e
            raise


class MemoryTokenStore(bp_ffi.TokenStore):
    """The Keychain's stand-in."""

    def __init__(self):
        self.session = None
        self.saves = 0

    def load(self):
        return self.session

    def save(self, session):
        self.session = session
        self.saves += 1

    def clear(self):
        self.session = None


class MemoryAppStore(bp_ffi.AppStore):
    """SharedPreferences' stand-in; share one between two SDKs to play an app restart."""

    def __init__(self):
        self.values = {}
        # Every value put, in order: a test rebuilds the store as a crash would have left it.
        self.written = []

    def get(self, key):
        return self.values.get(key)

    def put(self, key, value):
        self.values[key] = value
        self.written.append((key, value))

    def remove(self, key):
        self.values.pop(key, None)

    def keys(self, prefix):
        return [k for k in self.values if k.startswith(prefix)]


class App:
    """An installation of the app: its stores and keys, and an SDK over them."""

    def __init__(self, server, tokens=None, store=None, dpop_key=None, sca_key=None):
        self.server = server
        self.tokens = tokens or MemoryTokenStore()
        self.store = store or MemoryAppStore()
        self.dpop_key = dpop_key or bp_ffi.SoftwareSigner.generate()
        self.sca_key = sca_key or bp_ffi.SoftwareSigner.generate()
        self.sdk = bp_ffi.BpSdk(server.config(), self.tokens, self.dpop_key, self.sca_key, self.store)

    def restarted(self):
        """The same installation after the process was killed: the stores and keys survive,
        everything in memory is new."""
        return App(self.server, self.tokens, self.store, self.dpop_key, self.sca_key)

    async def sign_in(self, username):
        url = await self.sdk.begin_sign_in()
        redirect = self.server.browser_sign_in(url, username)
        return await self.sdk.complete_sign_in(redirect)

    def crashed_after(self, written_before, prefix):
        """The app died after the bank answered the request stored (under `prefix`) since
        `len(store.written)` was `written_before`, before it forgot it: the store holds the
        record again, and a restarted app finds it. Returns the restarted app."""
        stored = [(k, v) for k, v in self.store.written[written_before:] if k.startswith(prefix)]
        assert len(stored) == 1, stored
        key, value = stored[0]
        assert key not in self.store.values, "forgotten after the final answer"
        self.store.values[key] = value
        return self.restarted()

    async def register_device(self, username):
        enrolment = await self.sdk.register_device("Test phone")
        return await self.sdk.confirm_device_with_totp(enrolment, self.server.totp(username))
