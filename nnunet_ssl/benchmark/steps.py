"""Run a sequence of real commands with one status line each, a progress bar, and full logs."""
import os
import re
import shutil
import subprocess
import sys
import time

from tqdm import tqdm

from nnunet_ssl.errors import SSLUserError


class StepRunner:
    def __init__(self, env: dict, log_folder: str, total_steps: int):
        self.env, self.log_folder, self.total, self.index = env, log_folder, total_steps, 0
        os.makedirs(log_folder, exist_ok=True)
        # console scripts live next to the interpreter in a venv that is not activated
        self.env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")

    def done(self, message: str) -> None:
        self.index += 1
        print(f"[{self.index}/{self.total}] {message}", flush=True)

    def run(self, name: str, command: list[str], skip_if: str | None = None, progress: str | None = None,
            total: int | None = None, env: dict | None = None) -> None:
        """Run ``command``; its output goes to <log_folder>/<name>.log, lines matching ``progress``
        (a regex) advance a progress bar; ``env`` adds variables for this command only."""
        if skip_if and os.path.exists(skip_if):
            self.done(f"{name}: already done ({skip_if}), skipped")
            return
        executable = shutil.which(command[0], path=self.env["PATH"])
        if executable is None:
            raise SSLUserError(f"command {command[0]!r} not found.", "pip install nnunet-ssl (it installs nnunetv2)")
        log_path = os.path.join(self.log_folder, f"{name}.log")
        start = time.time()
        pattern = re.compile(progress) if progress else None
        bar = tqdm(total=total, desc=f"[{self.index + 1}/{self.total}] {name}", unit=" epochs" if pattern else "",
                   leave=False, disable=pattern is None)
        with open(log_path, "w") as log:
            process = subprocess.Popen([executable, *command[1:]], env={**self.env, **(env or {})}, stdout=subprocess.PIPE,
                                       stderr=subprocess.STDOUT, text=True, bufsize=1)
            for line in process.stdout:
                log.write(line)
                if pattern and pattern.search(line.strip()):
                    bar.update(1)
            code = process.wait()
        bar.close()
        if code != 0:
            with open(log_path) as f:
                tail = "".join(f.readlines()[-25:])
            raise SSLUserError(f"step {name!r} failed (exit code {code}): {' '.join(command)}\n{tail}",
                               f"read {log_path}; fix the cause and re-run (finished steps are skipped)")
        self.done(f"{name}: {time.time() - start:.0f} s (log: {log_path})")
