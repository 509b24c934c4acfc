"""StepRunner (benchmark/steps.py): real subprocesses, their logs, skips and failures."""
import os
import sys

import pytest

from nnunet_ssl.benchmark.steps import StepRunner
from nnunet_ssl.errors import SSLUserError

PYTHON = os.path.basename(sys.executable)  # found through the PATH entry StepRunner adds


def _step(name: str, code: str) -> tuple[str, list[str], None]:
    return name, [PYTHON, "-c", code], None


def test_steps_run_together_overlap_and_log_separately(tmp_path, capsys):
    runner = StepRunner(dict(os.environ), str(tmp_path / "logs"), total_steps=3)
    # each step waits until the other has started: run one after the other, this would never end
    wait_for = ("import os, time, sys\nopen(sys.argv[1], 'w').close()\nfor _ in range(600):\n"
                "    time.sleep(0.05)\n    if os.path.exists(sys.argv[2]): print('Epoch 1'); break\n"
                "else: sys.exit(3)")
    a, b = str(tmp_path / "a.started"), str(tmp_path / "b.started")
    runner.run_together([("a", [PYTHON, "-c", wait_for, a, b], None), ("b", [PYTHON, "-c", wait_for, b, a], None),
                         ("c", [PYTHON, "-c", "print('never')"], str(tmp_path))], progress=r"Epoch \d+$")
    assert open(tmp_path / "logs" / "a.log").read() == "Epoch 1\n" == open(tmp_path / "logs" / "b.log").read()
    out = capsys.readouterr().out
    assert "c: already done" in out and "[3/3] " in out and not (tmp_path / "logs" / "c.log").exists()


def test_a_failing_step_raises_with_its_log_tail(tmp_path):
    runner = StepRunner(dict(os.environ), str(tmp_path / "logs"), total_steps=2)
    with pytest.raises(SSLUserError, match=r"step 'bad' failed \(exit code 4\)[\s\S]*went wrong"):
        runner.run_together([_step("good", "print('fine')"),
                             _step("bad", "import sys; print('went wrong'); sys.exit(4)")])
    with pytest.raises(SSLUserError, match="command 'no_such_command_xyz' not found"):
        runner.run("missing", ["no_such_command_xyz"])
