"""The one exception type for user mistakes: a message that says what is wrong and how to fix it.

Command-line entry points print it without a traceback (see nnunet_ssl.cli.run_cli); trainers
running inside nnUNetv2_train raise it as SystemExit for the same effect.
"""


class SSLUserError(Exception):
    def __init__(self, problem: str, fix: str | None = None):
        self.problem = problem
        self.fix = fix
        super().__init__(problem + (f"\n  Fix: {fix}" if fix else ""))
