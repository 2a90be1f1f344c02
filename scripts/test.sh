#!/usr/bin/env bash
# Install everything the test suite needs on Debian 12 (as root) and run the whole suite.
#   bash scripts/test.sh            # all tests
#   bash scripts/test.sh -m 'not slow' -x   # extra arguments go to pytest
# Works unattended (CI=true, no stdin).  Exit code: pytest's, except that "no tests
# collected" (pytest exit 5) is a failure, not a pass.
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive
VENV="${MAILCA_VENV:-.venv}"

need_apt=0
while read -r pkg; do
  [[ -z "$pkg" || "$pkg" == \#* ]] && continue
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need_apt=1
done < scripts/apt-packages.txt
if [[ $need_apt == 1 ]]; then
  if [[ $(id -u) -ne 0 ]]; then echo "scripts/test.sh: run as root to install the Debian packages in scripts/apt-packages.txt" >&2; exit 1; fi
  apt-get update -q
  # Postfix asks for a mailer type on install: preseed 'Local only'.
  echo 'postfix postfix/main_mailer_type select Local only' | debconf-set-selections
  echo 'postfix postfix/mailname string localhost' | debconf-set-selections
  # Never let a package start its daemon (a system Postfix would listen on 0.0.0.0:25):
  # tests start their own instances, bound to 127.0.0.1 only.
  policy_added=0
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && policy_added=1
  fi
  # shellcheck disable=SC2046
  apt-get install -y -q --no-install-recommends $(grep -Ev '^\s*(#|$)' scripts/apt-packages.txt)
  [[ $policy_added == 1 ]] && rm -f /usr/sbin/policy-rc.d
fi
# In CI, if a daemon was started anyway (e.g. by an earlier install), stop the system instance.
if [[ "${CI:-}" == "true" ]] && command -v postfix >/dev/null && postfix status >/dev/null 2>&1; then postfix stop >/dev/null 2>&1 || true; fi

PY="${PYTHON:-python3}"
if [[ ! -x "$VENV/bin/python" ]]; then
  "$PY" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -e '.[test]'

# sslyze (an anchor of bench/bench_check.py) pins an older cryptography than mailca uses,
# so it lives in a virtualenv of its own.
SSLYZE_VENV="${MAILCA_SSLYZE_VENV:-.venv-sslyze}"
if [[ ! -x "$SSLYZE_VENV/bin/sslyze" ]]; then
  "$PY" -m venv "$SSLYZE_VENV"
  "$SSLYZE_VENV/bin/python" -m pip install -q --disable-pip-version-check 'sslyze>=6,<7'
fi
export SSLYZE="$PWD/$SSLYZE_VENV/bin/sslyze"

set +e
"$VENV/bin/python" -m pytest "$@"
rc=$?
set -e
if [[ $rc == 5 ]]; then
  echo "scripts/test.sh: pytest collected no tests - failing the run" >&2
  exit 1
fi
exit $rc
