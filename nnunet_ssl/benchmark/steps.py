"""Run a sequence of real commands with one status line each, a progress bar, and full logs."""
import os
import re
import shutil
import subprocess
import sys
import threading
import time

from tqdm import tqdm

from nnunet_ssl.errors import SSLUserError


class StepRunner:
    def __init__(self, env: dict, log_folder: str, total_steps: int):
        self.env, self.log_folder, self.total, self.index = env, log_folder, total_steps, 0
        os.makedirs(log_folder, exist_ok=True)
        # console scripts live next to the interpreter in a venv that is not activated
        self.env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
        # a Python child writing into our pipe buffers its output in blocks: the progress bars would jump
        self.env.setdefault("PYTHONUNBUFFERED", "1")

    def done(self, message: str) -> None:
        self.index += 1
        print(f"[{self.index}/{self.total}] {message}", flush=True)

    def run(self, name: str, command: list[str], skip_if: str | None = None, progress: str | None = None,
            total: int | None = None, env: dict | None = None) -> None:
        """Run ``command``; its output goes to <log_folder>/<name>.log, lines matching ``progress``
        (a regex) advance a progress bar; ``env`` adds variables for this command only."""
        self.run_together([(name, command, skip_if)], progress, total, env)

    def run_together(self, steps: list[tuple[str, list[str], str | None]], progress: str | None = None,
                     total: int | None = None, env: dict | None = None) -> None:
        """Run independent (name, command, skip_if) steps at the same time, each with its own log and
        progress bar: two 1-thread trainings on 2 cores finish in about the time of one."""
        pending = []
        for name, command, skip_if in steps:
            if skip_if and os.path.exists(skip_if):
                self.done(f"{name}: already done ({skip_if}), skipped")
                continue
            executable = shutil.which(command[0], path=self.env["PATH"])
            if executable is None:
                raise SSLUserError(f"command {command[0]!r} not found.",
                                   "pip install nnunet-ssl (it installs nnunetv2)")
            pending.append((name, command, executable))
        outcomes: dict[str, tuple[int, str, float]] = {}
        threads = [threading.Thread(target=self._execute, daemon=True,
                                    args=(name, [executable, *command[1:]], progress, total, env, position, outcomes))
                   for position, (name, command, executable) in enumerate(pending)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for name, command, _ in pending:
            code, log_path, seconds = outcomes[name]
            if code != 0:
                with open(log_path) as f:
                    tail = "".join(f.readlines()[-25:])
                raise SSLUserError(f"step {name!r} failed (exit code {code}): {' '.join(command)}\n{tail}",
                                   f"read {log_path}; fix the cause and re-run (finished steps are skipped)")
            self.done(f"{name}: {seconds:.0f} s (log: {log_path})")

    def _execute(self, name: str, argv: list[str], progress: str | None, total: int | None, env: dict | None,
                 position: int, outcomes: dict) -> None:
        log_path = os.path.join(self.log_folder, f"{name}.log")
        start = time.time()
        pattern = re.compile(progress) if progress else None
        bar = tqdm(total=total, desc=f"[{self.index + 1 + position}/{self.total}] {name}",
                   unit=" epochs" if pattern else "", leave=False, disable=pattern is None, position=position)
        with open(log_path, "w") as log:
            process = subprocess.Popen(argv, env={**self.env, **(env or {})},
                                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
            for line in process.stdout:
                log.write(line)
                if pattern and pattern.search(line.strip()):
                    bar.update(1)
            code = process.wait()
        bar.close()
        outcomes[name] = (code, log_path, time.time() - start)
