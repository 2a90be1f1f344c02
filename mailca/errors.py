from __future__ import annotations

"""One error hierarchy.  Every user-facing failure is a MailcaError with an exit code
and a one-line message that says what was wrong and what would be valid (mkcert's style).
The CLI prints ``mailca: error: <message>`` to stderr and exits with ``exit_code``;
it never prints a traceback for these.

Every exit code mailca uses is named in :class:`ExitCode` (documented in README and
``mailca --help``); nothing else in mailca writes a bare number."""

from enum import IntEnum

__all__ = ["ExitCode", "MailcaError", "UsageError", "StoreError", "VerificationError", "CheckFindings",
           "ConnectError", "HookError", "GateHeld"]


class ExitCode(IntEnum):
    OK = 0
    ERROR = 1            # an unexpected failure (a bug: please report it)
    USAGE = 2            # bad input: name, key type, profile value, file, option combination
    STORE = 3            # store/state problem: no CA, corrupt or missing file, permissions
    VERIFICATION = 4     # a certificate failed lint or chain/hostname verification
    CHECK_FINDINGS = 5   # 'mailca check'/'doctor' found problems
    CONNECT = 6          # a live server could not be reached or spoke the wrong protocol
    HOOK = 7             # a deploy hook failed
    INTERRUPTED = 130    # Ctrl-C / aborted prompt (128 + SIGINT)
    BROKEN_PIPE = 141    # stdout closed early, e.g. '| head' (128 + SIGPIPE)


class MailcaError(Exception):
    """Base class.  ``message`` is one line, shown to the user as is."""

    exit_code = ExitCode.ERROR

    def __init__(self, message: str, *, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:  # pragma: no cover - trivial
        return self.message if not self.hint else f"{self.message} ({self.hint})"


class UsageError(MailcaError):
    """Bad input: a bad name, key type, profile value, file, option combination."""

    exit_code = ExitCode.USAGE


class StoreError(MailcaError):
    """Store/state problems: no CA yet, CA exists already, corrupt or missing files,
    unwritable directory, lock trouble."""

    exit_code = ExitCode.STORE


class GateHeld(StoreError):
    """A switch of the served key or chain waits for DNS (the DANE gate holds).  The
    scheduled job ('mailca auto') treats it as a normal, quiet outcome; a command run by
    hand exits 3 with the reason."""


class VerificationError(MailcaError):
    """A certificate failed lint or chain/hostname verification; nothing was written."""

    exit_code = ExitCode.VERIFICATION


class CheckFindings(MailcaError):
    """``mailca check`` found problems rated MEDIUM or worse."""

    exit_code = ExitCode.CHECK_FINDINGS


class ConnectError(MailcaError):
    """A live server could not be reached or did not speak the expected protocol."""

    exit_code = ExitCode.CONNECT


class HookError(MailcaError):
    """A deploy hook failed or could not be run."""

    exit_code = ExitCode.HOOK
