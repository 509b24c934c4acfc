"""Command-line entry points: each parses arguments and calls a typed function."""
import json
import signal
import sys
from typing import Callable

from nnunet_ssl.errors import SSLUserError
from nnunet_ssl.integration.device import wait_policy_default

# before any of our console scripts imports torch, also where the start-up hook is not installed
# (an editable install before `nnUNetv2_ssl_doctor --fix`); the hook covers nnUNetv2_train
wait_policy_default()


class Terminated(KeyboardInterrupt):
    """SIGTERM (kill, a scheduler's stop), handled like Ctrl-C: the same clean-up and messages."""


def _raise_terminated(signum, frame):
    raise Terminated()


def run_cli(main: Callable[[], object]) -> None:
    """Run ``main``; a user mistake prints its message and fix, with no traceback, exit code 2. Ctrl-C
    and SIGTERM stop it with exit code 130 / 143; whatever was interrupted reports what it saved."""
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        main()
    except SSLUserError as e:
        print(f"\nnnunet-ssl error: {e.problem}", file=sys.stderr)
        if e.fix:
            print(f"  Fix: {e.fix}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt as e:
        terminated = isinstance(e, Terminated)
        print(f"\n{'terminated (SIGTERM)' if terminated else 'interrupted'}", file=sys.stderr)
        sys.exit(143 if terminated else 130)
    finally:
        signal.signal(signal.SIGTERM, previous)


def parse_assignments(items: list[str]) -> dict:
    """--set KEY=VALUE items as a dict; each value parsed as JSON where it is JSON, else kept as text."""
    values = {}
    for item in items:
        if "=" not in item:
            raise SSLUserError(f"--set expects key=value, got {item!r}.", "for example --set theta=0.05")
        key, raw = item.split("=", 1)
        try:
            values[key] = json.loads(raw)
        except json.JSONDecodeError:
            values[key] = raw
    return values
