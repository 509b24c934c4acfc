"""Command-line entry points: each parses arguments and calls a typed function."""
import sys
from typing import Callable

from nnunet_ssl.errors import SSLUserError
from nnunet_ssl.integration.device import wait_policy_default

# before any of our console scripts imports torch, also where the start-up hook is not installed
# (an editable install before `nnUNetv2_ssl_doctor --fix`); the hook covers nnUNetv2_train
wait_policy_default()


def run_cli(main: Callable[[], object]) -> None:
    """Run ``main``; a user mistake prints its message and fix, with no traceback, exit code 2."""
    try:
        main()
    except SSLUserError as e:
        print(f"\nnnunet-ssl error: {e.problem}", file=sys.stderr)
        if e.fix:
            print(f"  Fix: {e.fix}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("\ninterrupted; checkpoint_latest.pth holds the last finished epoch (resume with --c)", file=sys.stderr)
        sys.exit(130)
