"""The one environment every child process gets (postconf, dovecot, update-ca-certificates,
certutil, deploy hooks): ours minus secrets.  ``MAILCA_PASSPHRASE`` unlocks the root key;
no child needs it, and a child's environment is readable by its own user in
/proc/PID/environ and is inherited by everything it starts."""

from __future__ import annotations

import os

__all__ = ["SECRET_ENV", "child_env"]

SECRET_ENV = frozenset({"MAILCA_PASSPHRASE"})


def child_env(extra: dict | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in SECRET_ENV}
    if extra:
        env.update({k: v for k, v in extra.items() if k not in SECRET_ENV})
    return env
