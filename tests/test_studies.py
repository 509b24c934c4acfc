"""The evidence as data: the rendered results page, README block and demo evidence match the studies; the demo's
table and closing lines give values, the run-to-run spread and the multi-fold result, never a verdict."""
import json
import os
import re

import pytest

from nnunet_ssl.benchmark import studies
from nnunet_ssl.benchmark.report import paired_dice_report
from nnunet_ssl.benchmark.statistics import Verdict

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VERDICT_WORDS = re.compile(r"\b(better|worse)\b", re.I)


def _read(root, relative):
    with open(os.path.join(root, relative)) as f:
        return f.read()


def test_results_page_readme_block_and_demo_evidence_are_not_stale(tmp_path):
    """Re-render from docs/studies/ and docs/records/demo/ into a temporary folder: what is checked in must be what
    the studies give today (run `nnUNetv2_ssl_render` after adding or changing a study). The PNG is not compared
    byte for byte (matplotlib versions differ); its rows are the page's table, which is."""
    written = studies.render(ROOT, str(tmp_path))
    assert os.path.isfile(tmp_path / studies.SUMMARY_FIGURE) and len(written) == 4
    for relative in (studies.RESULTS_PAGE, studies.EVIDENCE, studies.README):
        assert _read(tmp_path, relative) == _read(ROOT, relative), f"{relative} is stale: run nnUNetv2_ssl_render"


def test_datasets_without_a_drawn_arm_are_named_in_the_readme_block():
    index = {"studies": [{"id": "h", "dataset": "Dataset501_Hippocampus"}, {"id": "a", "dataset": "Dataset027_ACDC"}]}
    arms = [{"study": "h"}]
    assert studies.other_datasets(index, arms) == ["ACDC"]
    assert studies.other_datasets({"studies": index["studies"][:1]}, arms) == []
    assert "ACDC: no arm compared yet" in studies.readme_block([], ["ACDC"])
    assert "Other datasets are not measured" in studies.readme_block([], [])


def test_every_study_in_the_index_has_its_folder_and_every_folder_is_indexed():
    index = studies.load_index(ROOT)
    folders = {d for d in os.listdir(os.path.join(ROOT, studies.STUDIES))
               if os.path.isdir(os.path.join(ROOT, studies.STUDIES, d))}
    assert {s["id"] for s in index["studies"]} == folders
    for study in index["studies"]:
        assert {"id", "title", "date", "dataset", "configuration", "command", "commit", "machine"} <= set(study)
        for name in ("benchmark.csv", "notes.md"):
            assert os.path.isfile(os.path.join(ROOT, studies.STUDIES, study["id"], name))
        assert not [f for f in os.listdir(os.path.join(ROOT, studies.STUDIES, study["id"])) if f.endswith(".json")]


def test_summary_arms_take_a_noise_band_measured_elsewhere_at_the_same_budget_and_length():
    index = {"studies": [{"id": "a", "configuration": "3d_fullres", "summary_arms": {"pcl|5|4000": "PCL"}},
                         {"id": "b", "configuration": "3d_fullres", "summary_arms": {"mae|5|4000": "MAE"}}]}
    worse = Verdict("worse", 3, 3)
    stats = {"mean": -0.02, "ci_low": -0.03, "ci_high": -0.01, "verdict": worse, "folds": 3, "cases": 9}
    reports = {"a": {"statistics": {("pcl", 5, 4000): dict(stats)}},
               "b": {"statistics": {("mae", 5, 4000): {**stats, "noise_band": 0.05,
                                                       "verdict": Verdict("worse", 3, 3, 0.05, False)}}}}
    arms = studies.summary_arms(index, reports)
    assert arms[0]["noise_band"] == 0.05 and arms[0]["verdict"] == Verdict("worse", 3, 3, 0.05, False)
    assert reports["a"]["statistics"][("pcl", 5, 4000)]["verdict"] == worse  # the study's own report untouched


def test_difference_range_and_the_arm_a_trainer_name_stands_for():
    assert studies.difference_range([]) == "none recorded"
    assert studies.difference_range([{"mean": -0.256, "record": "x"}]) == "1 recorded run, Δ -0.256"
    assert studies.difference_range([{"mean": -0.256, "record": "docs/records/demo/2026-12-06"}, {"mean": 0.172}]) == \
        "2 recorded runs, Δ from -0.256 to +0.172 (1 of them reported without per-case numbers)"
    assert studies.trainer_arm("SSLInitTrainer_mae_freshFirstStage_cpuDemo") == ("mae", "mae+freshFirstStage")
    assert studies.trainer_arm("SSLInitTrainer_pcl_cpu4000it") == ("pcl", "pcl")
    assert studies.trainer_arm("SSLScratchTrainer_cpuDemo") == (None, None)


def test_multi_fold_result_prefers_the_recipe_then_the_nearest_label_budget():
    arms = [{"arm": "mae", "labeled": 2, "configuration": "3d_fullres"},
            {"arm": "mae", "labeled": 10, "configuration": "3d_fullres"},
            {"arm": "mae+freshFirstStage", "labeled": 5, "configuration": "2d"}]
    assert studies.multi_fold_result(arms, "SSLInitTrainer_mae_freshFirstStage_cpuDemo", 5, "3d_fullres") == arms[0]
    assert studies.multi_fold_result(arms, "SSLInitTrainer_mae_freshFirstStage_cpuDemo", 5, "2d") == arms[2]
    assert studies.multi_fold_result(arms, "SSLInitTrainer_byol_cpuDemo", 5, "3d_fullres") is None


def _summary_from_record(path, per_case: dict) -> str:
    """nnU-Net's summary.json for one arm of a recorded demo run (its per-case Dice per class)."""
    entries = [{"reference_file": f"/gt/{case}.nii.gz",
                "metrics": {c: {"Dice": d} for c, d in dice.items() if c != "foreground"}}
               for case, dice in per_case.items()]
    path.write_text(json.dumps({"metric_per_case": entries}))
    return str(path)


def test_demo_table_and_closing_lines_show_the_spread_and_the_evidence_not_a_verdict(tmp_path):
    """On the recorded 2026-12-06 demo run (per-case numbers as the demo wrote them) and the rendered evidence."""
    from nnunet_ssl.benchmark.demo import load_protocol
    record = json.loads(_read(ROOT, "docs/records/demo/2026-12-06/demo_result.json"))["per_case"]
    protocol, evidence = load_protocol(), studies.load_evidence()
    spread = studies.difference_range(studies.same_setting_runs(evidence["demo_runs"], protocol))
    report = paired_dice_report({arm: _summary_from_record(tmp_path / f"{arm}.json", cases)
                                 for arm, cases in record.items()}, "scratch", str(tmp_path / "demo_result"),
                                {"1": "Anterior", "2": "Posterior"}, run_to_run=spread)
    closing = "\n".join(studies.demo_closing_lines(evidence, protocol))
    for text in (report["markdown"], closing, _read(tmp_path, "demo_result.md")):
        assert not VERDICT_WORDS.search(text)
    assert "this run [95% CI over its 30 cases]" in report["markdown"]
    assert f"| -0.256 [-0.283, -0.227] | {spread} |" in report["markdown"]
    runs = studies.same_setting_runs(evidence["demo_runs"], protocol)
    assert len(runs) >= 2 and f"{min(r['mean'] for r in runs):+.3f} to {max(r['mean'] for r in runs):+.3f}" in closing
    mae = studies.multi_fold_result(evidence["arms"], protocol["trainers"]["mae"], 5, "3d_fullres")
    assert mae["study"] == "hippocampus_mae_freshFirstStage_M5_2026-12-06"
    assert f"{mae['mean']:+.3f} [{mae['ci_low']:+.3f}, {mae['ci_high']:+.3f}]" in closing
    assert mae["notes"] in closing and os.path.isfile(os.path.join(ROOT, mae["notes"])) and "docs/results.md" in closing
    assert "verdict" not in json.loads(_read(tmp_path, "demo_result.json"))["statistics"]["mae"]


def test_readme_results_block_is_replaced_between_its_markers_only():
    text = "intro\n<!-- results -->\nold\n<!-- /results -->\nrest\n"
    assert studies.replace_block(text, "<!-- results -->\nnew\n<!-- /results -->") == \
        "intro\n<!-- results -->\nnew\n<!-- /results -->\nrest\n"
    with pytest.raises(ValueError):
        studies.replace_block("no markers", "x")
