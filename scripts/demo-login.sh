#!/usr/bin/env bash
# Signs in to a running reference server as a demo customer, the way a browser does (the
# authorization-code flow with PKCE through the HTML login pages, with curl), and prints the
# token response (JSON). Needs curl, openssl and python3.
#
#   scripts/demo-login.sh [base-url] [username]        (defaults: http://127.0.0.1:8080, ada)
#
# The password and TOTP secret come from data/demo-credentials.txt (or $BP_CREDENTIALS); the
# TOTP code is computed by the server binary's `totp` command (or $BP_TOTP_COMMAND).
#
# It signs in as the development client `bp-cli`, whose tokens are bearer tokens (curl cannot
# make the DPoP proofs that the web and mobile clients' tokens need with every request); its
# redirect URI is a loopback one, which matches on any port.
set -euo pipefail
BASE="${1:-http://127.0.0.1:8080}"
USERNAME="${2:-ada}"
CREDENTIALS="${BP_CREDENTIALS:-data/demo-credentials.txt}"
TOTP_COMMAND="${BP_TOTP_COMMAND:-cargo run -q -p bp-server-example -- totp}"
CLIENT_ID="${BP_CLIENT_ID:-bp-cli}"
REDIRECT_URI="${BP_REDIRECT_URI:-http://127.0.0.1:8080/callback}"

field() { # field <username> <password|totp_secret>
  python3 -c 'import json,sys
line=[l for l in open(sys.argv[1]) if l.startswith("JSON ")][0][5:]
print([c for c in json.loads(line) if c["username"]==sys.argv[2]][0][sys.argv[3]])' "$CREDENTIALS" "$1" "$2"
}
urlencode() { python3 -c 'import sys,urllib.parse; print(urllib.parse.quote(sys.argv[1], safe=""))' "$1"; }

PASSWORD="$(field "$USERNAME" password)"
SECRET="$(field "$USERNAME" totp_secret)"
JAR="$(mktemp)"; trap 'rm -f "$JAR"' EXIT

# PKCE: a random verifier and its S256 challenge.
VERIFIER="$(openssl rand -base64 48 | tr '+/' '-_' | tr -d '=\n')"
CHALLENGE="$(printf '%s' "$VERIFIER" | openssl dgst -sha256 -binary | openssl base64 | tr '+/' '-_' | tr -d '=\n')"

# 1. The authorization request shows the login form (and sets its cookie).
PAGE="$(curl -sf -c "$JAR" "$BASE/oauth2/authorize?response_type=code&client_id=$CLIENT_ID&redirect_uri=$(urlencode "$REDIRECT_URI")&scope=openid%20profile%20accounts%20payments%20offline_access&state=demo&code_challenge=$CHALLENGE&code_challenge_method=S256")"
TX="$(printf '%s' "$PAGE" | sed -n 's/.*name="tx" value="\([^"]*\)".*/\1/p' | head -1)"

# 2. Username and password.
curl -sf -b "$JAR" -c "$JAR" -o /dev/null --data-urlencode "tx=$TX" --data-urlencode "username=$USERNAME" \
  --data-urlencode "password=$PASSWORD" "$BASE/oauth2/login/password"

# 3. The second factor: the current TOTP code. The answer redirects to the client with the code.
CODE="$($TOTP_COMMAND "$SECRET")"
LOCATION="$(curl -s -b "$JAR" -o /dev/null -w '%{redirect_url}' --data-urlencode "tx=$TX" \
  --data-urlencode "code=$CODE" "$BASE/oauth2/login/second-factor")"
AUTH_CODE="$(python3 -c 'import sys,urllib.parse; print(urllib.parse.parse_qs(urllib.parse.urlparse(sys.argv[1]).query)["code"][0])' "$LOCATION")"

# 4. The code and the PKCE verifier for tokens.
curl -sf --data-urlencode grant_type=authorization_code --data-urlencode "code=$AUTH_CODE" \
  --data-urlencode "redirect_uri=$REDIRECT_URI" --data-urlencode "client_id=$CLIENT_ID" \
  --data-urlencode "code_verifier=$VERIFIER" "$BASE/oauth2/token"
echo
