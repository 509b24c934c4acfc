"""The demo's paired report and class-onset reading, on hand-made nnU-Net summaries."""
import json

import numpy as np
import pytest

from nnunet_ssl.benchmark.report import ONE_RUN_CAVEAT, class_onsets, paired_dice_report


def _summary(path, dice_by_case: dict[str, tuple[float, float]]) -> str:
    entries = [{"reference_file": f"/gt/{case}.nii.gz", "metrics": {"1": {"Dice": a}, "2": {"Dice": b}}}
               for case, (a, b) in dice_by_case.items()]
    path.write_text(json.dumps({"metric_per_case": entries}))
    return str(path)


def test_paired_report_has_the_case_interval_the_run_to_run_spread_onsets_and_caveat_and_no_verdict(tmp_path):
    scratch = {f"c{i}": (0.5, 0.3) for i in range(6)}
    better = {f"c{i}": (0.5 + 0.1 * (i + 1), 0.3) for i in range(6)}  # +0.05 .. +0.30 foreground, every case
    report = paired_dice_report({"scratch": _summary(tmp_path / "s.json", scratch),
                                 "pcl": _summary(tmp_path / "p.json", better)}, "scratch", str(tmp_path / "demo"),
                                {"1": "Anterior", "2": "Posterior"},
                                onsets={"scratch": {"1": 3, "2": None}, "pcl": {"1": 2, "2": 9}},
                                run_to_run="2 recorded runs, Δ from -0.256 to +0.172")
    stats = report["statistics"]["pcl"]
    assert stats["mean"] == pytest.approx(0.175) and stats["cases_better"] == 6 and "verdict" not in stats
    assert stats["wilcoxon_p"] == pytest.approx(2 / 64)  # all 6 positive: exact two-sided p
    markdown = report["markdown"]
    assert "| pcl | 0.850 ± 0.171 | 0.300 ± 0.000 | 0.575 ± 0.085 | +0.175 [" in markdown
    assert "] | 2 recorded runs, Δ from -0.256 to +0.172 |" in markdown
    assert "this run [95% CI over its 6 cases]" in markdown
    assert "better" not in markdown and "6/6" not in markdown  # one run: every case above scratch is no verdict
    assert "- scratch: Anterior epoch 3, Posterior never" in markdown and ONE_RUN_CAVEAT in markdown
    assert json.load(open(report["json"]))["onsets"]["pcl"] == {"1": 2, "2": 9}


def test_class_onset_is_the_first_epoch_at_the_threshold():
    per_epoch = np.array([[0.0, 0.0], [0.1, 0.0], [0.25, 0.05], [0.1, 0.19], [0.6, 0.2]]).tolist()
    assert class_onsets(per_epoch, ["1", "2"]) == {"1": 3, "2": 5}
    assert class_onsets(per_epoch[:3], ["1", "2"]) == {"1": 3, "2": None}
