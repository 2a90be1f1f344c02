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
# Exim 4 as a sending MTA (tests/test_deploy.py): exim4-base and exim4-daemon-light conflict with
# postfix in apt, so their .debs are downloaded (once, cached) and unpacked with dpkg -x; the test
# runs that binary with -C its own config.  Exim insists on its compiled-in user Debian-exim
# existing (as exim4-base's postinst would create it); no Exim daemon is ever started.
EXIM_CACHE="${MAILCA_EXIM_CACHE:-/var/cache/mailca-test/exim}"
if [[ $(id -u) -eq 0 && ! -x "$EXIM_CACHE/root/usr/sbin/exim4" ]]; then
  mkdir -p "$EXIM_CACHE"
  if ! ls "$EXIM_CACHE"/exim4-daemon-light_*.deb >/dev/null 2>&1 || ! ls "$EXIM_CACHE"/exim4-base_*.deb >/dev/null 2>&1; then
    # stale package lists (no apt-get update above when every package was already installed)
    # can name a version the mirror no longer has: update once and retry
    (cd "$EXIM_CACHE" && apt-get download -q exim4-base exim4-daemon-light) ||
      { apt-get update -q && (cd "$EXIM_CACHE" && apt-get download -q exim4-base exim4-daemon-light); }
  fi
  rm -rf "$EXIM_CACHE/root.tmp" && mkdir -p "$EXIM_CACHE/root.tmp"
  for deb in "$EXIM_CACHE"/exim4-base_*.deb "$EXIM_CACHE"/exim4-daemon-light_*.deb; do dpkg -x "$deb" "$EXIM_CACHE/root.tmp"; done
  rm -rf "$EXIM_CACHE/root" && mv "$EXIM_CACHE/root.tmp" "$EXIM_CACHE/root"
fi
if [[ $(id -u) -eq 0 ]] && ! getent passwd Debian-exim >/dev/null; then
  useradd --system --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin Debian-exim
fi
export MAILCA_EXIM_ROOT="$EXIM_CACHE/root"

# In CI, if a daemon was started anyway (e.g. by an earlier install), stop the system instance.
if [[ "${CI:-}" == "true" ]] && command -v postfix >/dev/null && postfix status >/dev/null 2>&1; then postfix stop >/dev/null 2>&1 || true; fi

# Two environments, so that what the tests run is what a user's install is:
#  * .venv-app: Debian's python3 and a plain `pip install .` (runtime dependencies only, as
#    pyproject.toml declares them).  Every CLI test runs its `mailca` (MAILCA_BIN); no test-only
#    package is importable there (tests/test_install.py proves both).
#  * .venv: the test tools (pytest, pkilint, selenium, ...) and mailca itself for the few
#    in-process unit tests, also a regular (non-editable) install.
APP_PY=/usr/bin/python3
[[ -x "$APP_PY" ]] || APP_PY=python3
APP_VENV="${MAILCA_APP_VENV:-.venv-app}"
[[ -x "$APP_VENV/bin/python" ]] || "$APP_PY" -m venv "$APP_VENV"
"$APP_VENV/bin/python" -m pip install -q --disable-pip-version-check . 2>&1 | grep -v '^WARNING: Location' || true
[[ -x "$APP_VENV/bin/mailca" ]] || { echo "scripts/test.sh: 'pip install .' gave no mailca script in $APP_VENV" >&2; exit 1; }
export MAILCA_BIN="$PWD/$APP_VENV/bin/mailca"

PY="${PYTHON:-python3}"
if [[ ! -x "$VENV/bin/python" ]]; then
  "$PY" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --disable-pip-version-check '.[test]' 2>&1 | grep -v '^WARNING: Location' || true

# sslyze (an anchor of bench/bench_check.py) pins an older cryptography than mailca uses,
# so it lives in a virtualenv of its own.
SSLYZE_VENV="${MAILCA_SSLYZE_VENV:-.venv-sslyze}"
if [[ ! -x "$SSLYZE_VENV/bin/sslyze" ]]; then
  "$PY" -m venv "$SSLYZE_VENV"
  "$SSLYZE_VENV/bin/python" -m pip install -q --disable-pip-version-check 'sslyze>=6,<7' 2>&1 | grep -v '^WARNING: Location' || true
fi
export SSLYZE="$PWD/$SSLYZE_VENV/bin/sslyze"

# pytest runs with -P: the checkout is not put on sys.path, so in-process tests import the
# installed mailca, not the source tree.
pytest_run() {
  set +e
  "$VENV/bin/python" -P -m pytest "$@"
  local rc=$?
  set -e
  if [[ $rc == 5 ]]; then
    echo "scripts/test.sh: pytest collected no tests - failing the run" >&2
    return 1
  fi
  return $rc
}

rc=0
if [[ $# -eq 0 ]]; then
  # The whole suite: two pytest workers (pytest-xdist; most of the wall time is real servers,
  # DNS TTLs and testssl.sh waiting, not CPU), a test file per worker so that a module's server
  # fixture starts once.  Then the benchmarks alone, so that no test of ours loads the machine
  # while they measure ratios.
  pytest_run -n 2 --dist loadfile -m "not bench" || rc=$?
  pytest_run -m bench || rc=$?
else
  pytest_run "$@" || rc=$?
fi

# The clock check (issue #9): the date-sensitive tests again, with the whole process tree
# (pytest, every mailca, openssl) under libfaketime at +1 day, +400 days and +4 years.
# Skipped when extra pytest arguments select something else (a developer's partial run).
# A "+offset" shifts every clock by a constant, so intervals stay real.  Not
# FAKETIME_DONT_FAKE_MONOTONIC=1 here: with libfaketime 0.9.10 it makes Python 3.11's time.sleep
# (clock_nanosleep on an absolute monotonic deadline) fail with EINVAL.
if [[ $# -eq 0 && "${MAILCA_SKIP_FAKETIME:-}" != "1" ]]; then
  for offset in +1d +400d +1461d; do
    echo "== date-sensitive tests under faketime $offset"
    MAILCA_FAULT_TRIALS_SCALE=0.25 \
      faketime -f "$offset" "$VENV/bin/python" -P -m pytest -q -p no:cacheprovider -n 2 --dist loadfile \
      $(cat scripts/date-sensitive-tests.txt | grep -Ev '^\s*(#|$)') || rc=1
  done
fi
exit $rc
