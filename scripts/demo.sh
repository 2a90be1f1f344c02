#!/usr/bin/env bash
# The main job on an embedded default: a demo CA for example.org in a temporary directory.
# init -> issue mail.example.org -> (bundle, postfix snippet, TLSA records where available).
# Needs only Python 3 (creates .venv with the Python dependencies on first use).
set -euo pipefail
cd "$(dirname "$0")/.."
# The same install a user makes: a virtualenv and a plain `pip install .` (what the tests run too).
VENV="${MAILCA_APP_VENV:-.venv-app}"
PY=/usr/bin/python3
[[ -x "$PY" ]] || PY=python3
if [[ ! -x "$VENV/bin/python" ]]; then
  if ! "$PY" -m venv "$VENV" 2>/dev/null; then
    echo "demo: python3 -m venv failed; installing python3-venv" >&2
    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv
    rm -rf "$VENV"; "$PY" -m venv "$VENV"
  fi
fi
"$VENV/bin/python" -m pip install -q --disable-pip-version-check . 2>&1 | grep -v '^WARNING: Location' || true
M="$VENV/bin/mailca"
DEMO=$(mktemp -d /tmp/mailca-demo.XXXXXX)
export MAILCA_DIR="$DEMO/store"
PASS="$DEMO/passphrase"
( umask 077; head -c 24 /dev/urandom | base64 > "$PASS" )
has() { "$M" "$1" --help >/dev/null 2>&1; }

echo "== mailca demo in $DEMO (store: $MAILCA_DIR)"
echo; echo "\$ mailca init --domain example.org --org 'Example Mail'"
"$M" init --domain example.org --org "Example Mail" --passphrase-file "$PASS"
echo; echo "\$ mailca issue mail.example.org --san smtp.example.org --san imap.example.org"
"$M" issue mail.example.org --san smtp.example.org --san imap.example.org
if has bundle; then echo; echo "\$ mailca bundle --out $DEMO/bundle"; "$M" bundle --out "$DEMO/bundle"; fi
if has postfix; then echo; echo "\$ mailca postfix mail.example.org --postfix-version 3.7"; "$M" postfix mail.example.org --postfix-version 3.7; fi
if has dane; then echo; echo "\$ mailca dane mail.example.org"; "$M" dane mail.example.org; fi
if has status; then echo; echo "\$ mailca status"; "$M" status; fi
echo; echo "== done: everything is in $DEMO (delete it when finished)"
