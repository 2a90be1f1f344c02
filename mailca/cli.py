"""Assembles the click group from ``mailca/commands/*.py`` and maps MailcaError to exit codes.

Each module in ``mailca.commands`` exposes ``cli`` (a click command or group); the command
name is the module name with ``_`` turned into ``-`` unless the module sets ``NAME``.
Command modules import only click and mailca's light modules at top level: anything heavy
(cryptography, pyOpenSSL) is imported inside the function that needs it, so that
``mailca --help`` starts fast.
"""

from __future__ import annotations

import importlib
import os
import sys

import click

from . import __version__
from .errors import ExitCode, MailcaError

_SKIP = {"common"}
# click >= 8.2 raises this for a bare 'mailca'; older click prints the help itself
_NO_ARGS = getattr(click.exceptions, "NoArgsIsHelpError", ())


_COMMANDS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "commands")


def _command_modules() -> dict[str, str]:
    """Command name -> module name, from the files in mailca/commands (no imports)."""
    found = {}
    for fname in os.listdir(_COMMANDS_DIR):
        mod, ext = os.path.splitext(fname)
        if ext != ".py" or mod.startswith("_") or mod in _SKIP:
            continue
        found[mod.replace("_", "-")] = f"mailca.commands.{mod}"
    return found


def _summary(modname: str) -> str:
    """First sentence of a command module's docstring, without importing the module."""
    path = os.path.join(_COMMANDS_DIR, modname.rsplit(".", 1)[1] + ".py")
    with open(path, encoding="utf-8") as fh:
        head = fh.read(600)
    text = head.split('"""', 2)[1] if head.startswith('"""') else ""
    text = " ".join(text.split())
    if ":" in text[:40]:
        text = text.split(":", 1)[1].strip()
    text = text.split(". ")[0].rstrip(".")
    return text + "." if text else ""


class LazyGroup(click.Group):
    """Discovers command modules and imports each only when it is needed."""

    def list_commands(self, ctx):
        return sorted(_command_modules())

    def format_commands(self, ctx, formatter):
        """The command list for ``mailca --help``, from each module's docstring summary
        ("mailca NAME: summary." as its first line), so that --help imports no command module."""
        rows = [(name, _summary(modname)) for name, modname in sorted(_command_modules().items())]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def get_command(self, ctx, name):
        mod = name.replace("-", "_")
        if not mod.replace("_", "").isalnum() or mod.startswith("_") or mod in _SKIP:
            return None
        if not os.path.exists(os.path.join(_COMMANDS_DIR, mod + ".py")):
            return None
        return getattr(importlib.import_module(f"mailca.commands.{mod}"), "cli")


HELP = """mailca: a private certificate authority for your own mail server.

\b
Typical first run:
  mailca init --domain example.org --org "Example Mail"
  mailca issue mail.example.org --san smtp.example.org
  mailca bundle --out ./for-users        # hand the root to your users
  mailca postfix mail.example.org        # main.cf / master.cf TLS settings
  mailca dane mail.example.org           # TLSA records for your (signed) zone

The store directory is --dir, else $MAILCA_DIR, else /etc/mailca when run as root
and ~/.local/share/mailca otherwise.  Exit codes: 0 ok, 2 bad input, 3 store/state
problem, 4 verification failed, 5 check found problems, 6 connection error, 7 hook failed.
"""


@click.group(cls=LazyGroup, help=HELP, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="mailca")
@click.option(
    "--dir",
    "store_dir",
    envvar="MAILCA_DIR",
    type=click.Path(file_okay=False),
    default=None,
    help="Store directory (default: $MAILCA_DIR, /etc/mailca as root, else ~/.local/share/mailca).",
)
@click.pass_context
def group(ctx, store_dir):
    ctx.ensure_object(dict)
    ctx.obj["store_dir"] = store_dir


def main(argv=None) -> int:
    try:
        group.main(args=argv, prog_name="mailca", standalone_mode=False)
    except MailcaError as exc:
        click.echo(f"mailca: error: {exc}", err=True)
        return int(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("mailca: aborted", err=True)
        return ExitCode.INTERRUPTED
    except _NO_ARGS as exc:
        click.echo(exc.ctx.get_help() if exc.ctx is not None else HELP)
        return ExitCode.OK
    except click.UsageError as exc:
        # One line, like every other error; say where the help is.
        cmd = exc.ctx.command_path if exc.ctx is not None else "mailca"
        click.echo(f"mailca: error: {exc.format_message()} (see '{cmd} --help')", err=True)
        return ExitCode.USAGE
    except click.ClickException as exc:
        click.echo(f"mailca: error: {exc.format_message()}", err=True)
        return ExitCode.USAGE
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except KeyboardInterrupt:
        click.echo("mailca: interrupted", err=True)
        return ExitCode.INTERRUPTED
    except BrokenPipeError:
        return ExitCode.BROKEN_PIPE
    except PermissionError as exc:
        click.echo(f"mailca: error: cannot access {exc.filename or 'a store file'}: permission denied "
                   "(run as the store's owner, e.g. with sudo)", err=True)
        return ExitCode.STORE
    except OSError as exc:
        click.echo(f"mailca: error: {exc.filename + ': ' if exc.filename else ''}{exc.strerror or exc}", err=True)
        return ExitCode.STORE
    return ExitCode.OK


def run() -> None:
    """Console-script entry point: ``main()``, then leave without interpreter teardown.

    Tearing down the ~400 modules that click and cryptography load costs ~12 ms, an eighth
    of a whole ``mailca issue``.  Every file mailca writes is closed (and fsynced) by then,
    worker threads are joined, and no atexit handler is registered, so after flushing
    stdout/stderr there is nothing left for the teardown to do.  ``main()`` itself returns
    normally, for callers that run mailca in-process."""
    rc = main()
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        rc = ExitCode.BROKEN_PIPE
    except (OSError, ValueError):
        pass
    try:
        sys.stderr.flush()
    except (OSError, ValueError):
        pass
    os._exit(int(rc) if isinstance(rc, int) else int(ExitCode.ERROR))


if __name__ == "__main__":  # pragma: no cover
    run()
