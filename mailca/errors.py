from __future__ import annotations

"""One error hierarchy.  Every user-facing failure is a MailcaError with an exit code
and a one-line message that says what was wrong and what would be valid (mkcert's style).
The CLI prints ``mailca: error: <message>`` to stderr and exits with ``exit_code``;
it never prints a traceback for these."""


class MailcaError(Exception):
    """Base class.  ``message`` is one line, shown to the user as is."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:  # pragma: no cover - trivial
        return self.message if not self.hint else f"{self.message} ({self.hint})"


class UsageError(MailcaError):
    """Bad input: a bad name, key type, profile value, file, option combination."""

    exit_code = 2


class StoreError(MailcaError):
    """Store/state problems: no CA yet, CA exists already, corrupt or missing files,
    unwritable directory, lock trouble."""

    exit_code = 3


class VerificationError(MailcaError):
    """A certificate failed lint or chain/hostname verification; nothing was written."""

    exit_code = 4


class CheckFindings(MailcaError):
    """``mailca check`` found problems rated MEDIUM or worse."""

    exit_code = 5


class ConnectError(MailcaError):
    """A live server could not be reached or did not speak the expected protocol."""

    exit_code = 6


class HookError(MailcaError):
    """A deploy hook failed or could not be run."""

    exit_code = 7
