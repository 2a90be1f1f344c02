"""Make server-supplied text safe to print on a terminal.

Everything a server sends (SMTP banner and replies, certificate subjects and names, bytes
quoted in error messages) is hostile: a banner such as ``220 ESC]0;title BEL ESC[2J ESC[1A
ESC[2K OK everything fine`` would retitle the window, clear the screen and rewrite lines of
the report that were already printed.  ``clean`` removes whole escape sequences (CSI, OSC,
DCS/SOS/PM/APC strings, two-byte ESC sequences, and their 8-bit C1 forms), then every
remaining control character (C0, DEL, C1), Unicode format characters (bidi overrides,
zero-width characters) and line/paragraph separators.  The JSON report keeps the original
string -- ``json.dumps`` escapes it as ``\\u001b...`` -- so nothing is lost for a machine.
"""

from __future__ import annotations

import re
import unicodedata

__all__ = ["clean"]

_SEQ = re.compile(
    r"(?:\x1b\[|\x9b)[\x20-\x3f]*[\x40-\x7e]?"                    # CSI ... final byte
    r"|(?:\x1b[\]PX^_]|[\x9d\x90\x98\x9e\x9f])[^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?"  # OSC/DCS/SOS/PM/APC ... ST
    r"|\x1b[\x20-\x2f]*[\x30-\x7e]?"                               # other ESC sequences (nF, Fp, Fe, Fs)
)


def _bad(ch: str) -> bool:
    return unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp", "Co", "Cs", "Cn") and ch != " "


def clean(text, limit: int | None = None) -> str:
    """``text`` without escape sequences and control/format characters (tab becomes a space);
    cut to ``limit`` characters (with '...') when given."""
    if text is None:
        return ""
    s = str(text).replace("\t", " ")
    s = _SEQ.sub("", s)
    if any(_bad(c) for c in s):
        s = "".join(c for c in s if not _bad(c))
    if limit is not None and len(s) > limit:
        s = s[:limit] + "..."
    return s
