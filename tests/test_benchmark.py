"""A tiny benchmark matrix end to end on CPU: label-budget fold, scratch vs PCL, results files."""
import csv
import json
import os
import shutil

import pytest
from conftest import DATASET_ID, PLANS, run_command, script

from nnunet_ssl.benchmark.report import benchmark_report, fold_means, paired_fold_differences, verdict_text
from nnunet_ssl.benchmark.run import plan_cells, trainer_name
from nnunet_ssl.benchmark.statistics import Verdict
from nnunet_ssl.errors import SSLUserError

pytestmark = pytest.mark.slow


def test_trainer_names_pair_scratch_with_method_pinned_init():
    assert trainer_name("scratch", "cpu1200it") == "SSLScratchTrainer_cpu1200it"
    assert trainer_name("pcl", "") == "SSLInitTrainer_pcl"
    rows = [{"labeled": 2, "base_fold": 0, "fold": 5}]
    assert [c.trainer for c in plan_cells(["scratch", "simclr"], rows, "tiny")] == \
        ["SSLScratchTrainer_tiny", "SSLInitTrainer_simclr_tiny"]
    with pytest.raises(SSLUserError, match="no trainer length 'forever'"):
        plan_cells(["pcl"], rows, "forever")


def test_reference_arms_and_lengths_make_a_learning_curve():
    rows = [{"labeled": 5, "base_fold": 0, "fold": 6}, {"labeled": 5, "base_fold": 1, "fold": 9}]
    cells = plan_cells(["scratch", "scratch_rerun", "nnunet"], rows, ["cpu500it", "cpu2000it"])
    assert [(c.arm, c.trainer, c.fold, c.iterations) for c in cells[:6]] == [
        ("scratch", "SSLScratchTrainer_cpu500it", 6, 500), ("scratch", "SSLScratchTrainer_cpu500it", 9, 500),
        ("scratch_rerun", "SSLScratchTrainer_rerun_cpu500it", 6, 500),
        ("scratch_rerun", "SSLScratchTrainer_rerun_cpu500it", 9, 500),
        ("nnunet", "nnUNetTrainer_cpu500it", 6, 500), ("nnunet", "nnUNetTrainer_cpu500it", 9, 500)]
    assert [c.iterations for c in cells[6:]] == [2000] * 6  # length by length: the curve fills evenly


def test_finetune_recipes_multiply_pretrained_arms_only():
    rows = [{"labeled": 2, "base_fold": 0, "fold": 5}]
    cells = plan_cells(["scratch", "pcl"], rows, "cpu500it", ("default", "lowEncoderLR"))
    assert [(c.arm, c.trainer) for c in cells] == [
        ("scratch", "SSLScratchTrainer_cpu500it"), ("pcl", "SSLInitTrainer_pcl_cpu500it"),
        ("pcl+lowEncoderLR", "SSLInitTrainer_pcl_lowEncoderLR_cpu500it")]
    from nnunet_ssl.integration.trainers import trainer_class
    pinned = trainer_class("SSLInitTrainer_mlsscl_decoderFirst_cpu2000it")
    assert pinned.PRETRAINING_METHOD == "mlsscl" and pinned.NUM_EPOCHS == 80
    assert pinned.encoder_lr_scale.__qualname__.startswith("SSLInitTrainer_decoderFirst")
    with pytest.raises(SSLUserError, match="unknown fine-tuning recipe"):
        plan_cells(["pcl"], rows, "tiny", ("frozen",))
    # a recipe that changes the schedule gets a scratch control on that schedule too
    cells = plan_cells(["scratch", "pcl"], rows, "cpu500it", ("default", "linearWarmup"))
    assert [(c.arm, c.trainer) for c in cells] == [
        ("scratch", "SSLScratchTrainer_cpu500it"), ("scratch+linearWarmup", "SSLScratchTrainer_linearWarmup_cpu500it"),
        ("pcl", "SSLInitTrainer_pcl_cpu500it"), ("pcl+linearWarmup", "SSLInitTrainer_pcl_linearWarmup_cpu500it")]


def test_an_arm_pinned_to_a_recipe_runs_that_recipe_only():
    rows = [{"labeled": 5, "base_fold": 0, "fold": 6}]
    cells = plan_cells(["scratch", "pcl", "mae+fullNetwork"], rows, "cpu4000it", ("default", "lowEncoderLR"))
    assert [(c.arm, c.trainer) for c in cells] == [
        ("scratch", "SSLScratchTrainer_cpu4000it"), ("pcl", "SSLInitTrainer_pcl_cpu4000it"),
        ("pcl+lowEncoderLR", "SSLInitTrainer_pcl_lowEncoderLR_cpu4000it"),
        ("mae+fullNetwork", "SSLInitTrainer_mae_fullNetwork_cpu4000it")]
    with pytest.raises(SSLUserError, match="unknown fine-tuning recipe"):
        plan_cells(["mae+frozen"], rows, "tiny")
    with pytest.raises(SSLUserError, match="no trainer 'SSLScratchTrainer_fullNetwork_tiny'"):
        plan_cells(["scratch+fullNetwork"], rows, "tiny")


def test_earlier_rows_stand_in_for_their_cells_once(tmp_path):
    from nnunet_ssl.benchmark.run import earlier_case_rows
    rows = [{"labeled": 5, "base_fold": 0, "fold": 6}, {"labeled": 5, "base_fold": 1, "fold": 9}]
    cells = plan_cells(["scratch"], rows, "cpu4000it")
    header = "method,labeled,iterations,base_fold,fold,trainer,case,dice_foreground\n"
    first = tmp_path / "a.csv"
    first.write_text(header + "scratch,5,4000,0,6,SSLScratchTrainer_cpu4000it,c1,0.8\n"
                              "scratch,5,4000,0,6,SSLScratchTrainer_cpu4000it,c2,0.6\n"
                              "scratch,5,2000,0,6,SSLScratchTrainer_cpu2000it,c1,0.7\n"  # another length: ignored
                              "scratch_rerun,5,4000,0,6,SSLScratchTrainer_cpu4000it,c1,0.5\n")  # from --rerun
    found, reused = earlier_case_rows([str(first)], cells)
    assert [r["case"] for r in found] == ["c1", "c2"] and [c.fold for c in reused] == [6]
    assert (found[0]["fold"], found[0]["iterations"], found[0]["dice_foreground"]) == (6, 4000, 0.8)  # typed
    copied = tmp_path / "copied.csv"  # the same scratch run, carried by a second report: counts once
    copied.write_text(header + "scratch,5,4000,0,6,SSLScratchTrainer_cpu4000it,c2,0.6\n"
                               "scratch,5,4000,0,6,SSLScratchTrainer_cpu4000it,c1,0.8\n")
    for paths in ([first, copied], [first, first]):
        found, reused = earlier_case_rows([str(p) for p in paths], cells)
        assert [r["case"] for r in found] == ["c1", "c2"] and [c.fold for c in reused] == [6]
    second = tmp_path / "b.csv"
    second.write_text(header + "scratch,5,4000,0,6,SSLScratchTrainer_cpu4000it,c1,0.9\n"
                               "scratch,5,4000,0,6,SSLScratchTrainer_cpu4000it,c2,0.6\n")
    with pytest.raises(SSLUserError, match="fold 6 is in both .* with different Dice"):
        earlier_case_rows([str(first), str(second)], cells)
    with pytest.raises(SSLUserError, match="cannot read --earlier"):
        earlier_case_rows([str(tmp_path / "missing.csv")], cells)


def test_one_reader_for_benchmark_csvs_with_and_without_an_iterations_column(tmp_path):
    """The benchmark's --earlier / --rerun and the studies read a benchmark.csv alike; only the studies read CSVs
    written before 2026-12-03 (no iterations column), as length 0."""
    from nnunet_ssl.benchmark.run import read_case_csv
    old = tmp_path / "old.csv"
    old.write_text("method,labeled,base_fold,fold,trainer,case,dice_foreground,dice_1\n"
                   "scratch,5,0,6,SSLScratchTrainer,001,0.8,nan\n")
    with pytest.raises(SSLUserError, match="not a benchmark.csv with per-case rows .no iterations"):
        read_case_csv(str(old), "--earlier")
    row, = read_case_csv(str(old), "study s", missing_iterations=0)
    assert list(row) == ["method", "labeled", "iterations", "base_fold", "fold", "trainer", "case",
                         "dice_foreground", "dice_1"]  # the column where the benchmark writes it
    assert (row["labeled"], row["iterations"], row["case"], row["dice_foreground"]) == (5, 0, "001", 0.8)
    assert row["dice_1"] != row["dice_1"]  # NaN: a class absent from the case
    new = tmp_path / "new.csv"
    new.write_text("method,labeled,iterations,base_fold,fold,trainer,case,dice_foreground\n"
                   "scratch,5,4000,0,6,SSLScratchTrainer_cpu4000it,c1,0.8\n")
    assert read_case_csv(str(new), "study s", missing_iterations=0)[0]["iterations"] == 4000
    assert read_case_csv(str(new), "--earlier") == read_case_csv(str(new), "study s", missing_iterations=0)
    new.write_text(new.read_text() + "scratch,5,4000,0,6,SSLScratchTrainer_cpu4000it,c2\n")
    with pytest.raises(SSLUserError, match="study s .*new.csv line 3 has 7 fields where the header has 8"):
        read_case_csv(str(new), "study s", missing_iterations=0)  # a study's CSV is checked as strictly


def test_another_run_of_scratch_reports_as_its_noise_floor(tmp_path):
    from nnunet_ssl.benchmark.run import rerun_case_rows, same_run
    rows = [{"labeled": 5, "base_fold": 0, "fold": 6}, {"labeled": 5, "base_fold": 1, "fold": 9}]
    cells = plan_cells(["scratch", "pcl"], rows, "cpu4000it")
    header = "method,labeled,iterations,base_fold,fold,trainer,case,dice_foreground\n"
    other = tmp_path / "gpu.csv"
    other.write_text(header + "scratch,5,4000,0,6,SSLScratchTrainer_cpu4000it,c1,0.8\n"
                              "pcl,5,4000,0,6,SSLInitTrainer_pcl_cpu4000it,c1,0.7\n"  # not scratch: ignored
                              "scratch,5,4000,1,9,SSLScratchTrainer_cpu4000it,c2,0.6\n")
    found = rerun_case_rows([str(other)], cells)
    assert [(r["method"], r["fold"], r["case"], r["trainer"]) for r in found] == [
        ("scratch_rerun", 6, "c1", "SSLScratchTrainer_cpu4000it"),
        ("scratch_rerun", 9, "c2", "SSLScratchTrainer_cpu4000it")]  # the trainer that ran stays on record
    one_fold = tmp_path / "one_fold.csv"
    one_fold.write_text(header + "scratch,5,4000,0,6,SSLScratchTrainer_cpu4000it,c1,0.8\n")
    with pytest.raises(SSLUserError, match="no SSLScratchTrainer_cpu4000it fold 9"):  # the noise floor pairs folds
        rerun_case_rows([str(one_fold)], cells)
    with pytest.raises(SSLUserError, match="add scratch to --methods"):
        rerun_case_rows([str(other)], plan_cells(["pcl"], rows, "cpu4000it"))
    with pytest.raises(SSLUserError, match="two sources for one arm"):
        rerun_case_rows([str(other)], plan_cells(["scratch", "scratch_rerun"], rows, "cpu4000it"))
    with pytest.raises(SSLUserError, match="given to both --earlier and --rerun"):
        rerun_case_rows([str(other)], cells, earlier=[str(other)])
    mine = [{"fold": 6, "case": "c1", "dice_foreground": "0.8"}, {"fold": 9, "case": "c2", "dice_foreground": 0.6}]
    assert same_run(mine, found)  # one run read twice: no noise floor
    assert not same_run([{**mine[0], "dice_foreground": 0.81}, mine[1]], found)


def test_fold_means_then_mean_over_folds():
    rows = [{"method": "pcl", "labeled": 2, "fold": f, "dice_foreground": v}
            for f, v in ((5, 0.2), (5, 0.4), (8, 0.9))]
    assert fold_means(rows, "dice_foreground") == {("pcl", 2, 0): [pytest.approx(0.3), pytest.approx(0.9)]}


def test_training_curves_average_the_epochs_every_fold_has(tmp_path):
    from nnunet_ssl.benchmark.plots import mean_training_curve, plot_training_curves
    assert mean_training_curve([[0.1, 0.5, 0.7], [0.3, 0.7]]).tolist() == pytest.approx([0.2, 0.6])
    plot_training_curves({("scratch", 5, 100): [[0.1, 0.5], [0.3, 0.7]], ("pcl", 5, 100): [[0.2, 0.4]]},
                         str(tmp_path / "training.png"))
    assert (tmp_path / "training.png").stat().st_size > 10_000


def test_paired_difference_to_scratch_is_per_fold(tmp_path):
    rows = [{"method": m, "labeled": 2, "fold": f, "case": c, "dice_foreground": v}
            for m, f, c, v in (("scratch", 5, "a", 0.2), ("scratch", 8, "b", 0.6), ("pcl", 5, "a", 0.3),
                               ("pcl", 8, "b", 0.5), ("pcl", 11, "c", 0.9))]  # fold 11 has no scratch: unpaired
    diffs = paired_fold_differences(rows, "scratch")
    assert diffs == {("pcl", 2, 0): [pytest.approx(0.1), pytest.approx(-0.1)]}
    report = benchmark_report(rows, str(tmp_path / "b"), {})
    markdown = report["markdown"]
    assert "Δ foreground vs scratch (fold-paired) | folds better | Δ per case [95% CI] | Wilcoxon p | verdict |" \
        in markdown
    assert "| pcl | 2 | — | 3 | 0.567 ± 0.249 | 0.000 ± 0.100 | 1/2 | +0.000 [-0.100, +0.100] | 1.000 | " \
           "no verdict (2 of the 3 folds it needs) |" in markdown
    assert "| scratch | 2 | — | 2 | 0.400 ± 0.200 | — | — | — | — | — |" in markdown
    assert report["statistics"][("pcl", 2, 0)]["cases"] == 2


def test_a_recipe_is_also_compared_with_its_own_pretraining(tmp_path):
    values = {"scratch": (0.5, 0.6), "pcl": (0.4, 0.5), "pcl+meanTeacher": (0.5, 0.7),
              "scratch+meanTeacher": (0.6, 0.6)}
    rows = [{"method": m, "labeled": 5, "iterations": 4000, "fold": f, "case": c, "dice_foreground": v[i]}
            for m, v in values.items() for f in (6, 9, 12) for i, c in enumerate(("a", "b"))]
    report = benchmark_report(rows, str(tmp_path / "b"), {})
    # pcl+meanTeacher - pcl: +0.1 and +0.2 on every fold; scratch+meanTeacher's plain arm is the baseline
    assert "| pcl+meanTeacher | pcl | 5 | 4000 | 3 | 0.150 ± 0.000 | 3/3 | +0.150 [+0.117, +0.183] | 0.031 | " \
           "better |" in report["markdown"]
    assert "| scratch+meanTeacher | scratch |" not in report["markdown"]
    assert list(report["recipe_statistics"]) == [("pcl+meanTeacher", 5, 4000)]
    assert report["recipe_statistics"][("pcl+meanTeacher", 5, 4000)]["verdict"] == Verdict("better", 3, 3)
    stored = json.loads((tmp_path / "b.json").read_text())["recipe_statistics"]["pcl+meanTeacher|5|4000"]
    assert stored["cases"] == 6 and stored["verdict"] == "better"  # in words, as the table says it


def test_verdicts_are_weighed_against_scratch_trained_again(tmp_path):
    # scratch 0.5 / 0.6 on every fold; scratch again moves whole folds by +0.1, -0.1, +0.1: band
    # t(0.975, 3) * 0.1 / sqrt(3) = 0.184. pcl is +0.05 on every case (better by the cases, within the band),
    # mae +0.2 (beyond it)
    offsets = {"scratch": {6: 0, 9: 0, 12: 0}, "scratch_rerun": {6: 0.1, 9: -0.1, 12: 0.1},
               "pcl": {6: 0.05, 9: 0.05, 12: 0.05}, "mae": {6: 0.2, 9: 0.2, 12: 0.2}}
    rows = [{"method": m, "labeled": 5, "iterations": 4000, "fold": f, "case": c, "dice_foreground": base + off}
            for m, by_fold in offsets.items() for f, off in by_fold.items() for c, base in (("a", 0.5), ("b", 0.6))]
    report = benchmark_report(rows, str(tmp_path / "b"), {})
    pcl, mae = report["statistics"][("pcl", 5, 4000)]["verdict"], report["statistics"][("mae", 5, 4000)]["verdict"]
    assert (pcl.direction, pcl.beyond_noise_floor, mae.direction, mae.beyond_noise_floor) == \
        ("better", False, "better", True)
    assert verdict_text(pcl) == "better, within the noise floor (±0.184)"
    assert verdict_text(mae) == "better, beyond the noise floor (±0.184)"
    assert report["statistics"][("pcl", 5, 4000)]["noise_band"] == pytest.approx(0.18374, abs=1e-5)
    assert "noise_band" not in report["statistics"][("scratch_rerun", 5, 4000)]
    assert "| +0.050 [+0.050, +0.050] | 0.031 | better, within the noise floor (±0.184) |" in report["markdown"]
    stored = json.loads((tmp_path / "b.json").read_text())["statistics"]["mae|5|4000"]
    assert stored["noise_band"] > 0.18 and stored["verdict"] == "better, beyond the noise floor (±0.184)"
    # and how many folds would tell a difference from retraining: (t * s / d)^2 = (0.31824 / d)^2, rounded up
    assert ("- M = 5, 4000 iterations: scratch trained again moved a fold by up to 0.100 (s = 0.100 per fold); "
            "over 3 folds a mean difference is told from retraining beyond ±0.184; telling 0.01 / 0.02 / 0.05 "
            "would take 1013 / 254 / 41 folds.") in report["markdown"]
    # a quiet floor still asks for the folds a verdict needs
    quiet = [{**r, "dice_foreground": r["dice_foreground"] - offsets["scratch_rerun"][r["fold"]] * 0.99}
             if r["method"] == "scratch_rerun" else r for r in rows]
    assert "would take 3 / 3 / 3 folds." in benchmark_report(quiet, str(tmp_path / "q"), {})["markdown"]
    # a noise floor on fewer folds than a verdict needs leaves the verdicts as the interval says
    two_folds = [r for r in rows if r["method"] != "scratch_rerun" or r["fold"] != 12]
    assert benchmark_report(two_folds, str(tmp_path / "c"), {})["statistics"][("pcl", 5, 4000)]["verdict"] == \
        Verdict("better", 3, 3)


def test_a_verdict_is_said_in_the_words_of_the_tables():
    assert verdict_text(Verdict("better", 3, 3)) == "better"  # no noise floor measured
    assert verdict_text(Verdict("worse", 3, 3, 0.055, False)) == "worse, within the noise floor (±0.055)"
    assert verdict_text(Verdict("better", 3, 3, 0.0551, True)) == "better, beyond the noise floor (±0.055)"
    assert verdict_text(Verdict("none", 3, 3)) == "no detectable difference"
    assert verdict_text(Verdict("better", 1, 3)) == "no verdict (1 of the 3 folds it needs)"


def test_the_differences_plot_marks_only_what_clears_zero_and_the_noise_floor(tmp_path):
    from nnunet_ssl.benchmark.plots import difference_rows
    # the rows of test_verdicts_are_weighed_against_scratch_trained_again: pcl +0.05 (within the band 0.184),
    # mae +0.2 (beyond it); byol at M = 2 has no noise floor and an interval below 0
    offsets = {"scratch": {6: 0, 9: 0, 12: 0}, "scratch_rerun": {6: 0.1, 9: -0.1, 12: 0.1},
               "pcl": {6: 0.05, 9: 0.05, 12: 0.05}, "mae": {6: 0.2, 9: 0.2, 12: 0.2}}
    rows = [{"method": m, "labeled": 5, "iterations": 4000, "fold": f, "case": c, "dice_foreground": base + off}
            for m, by_fold in offsets.items() for f, off in by_fold.items() for c, base in (("a", 0.5), ("b", 0.6))]
    rows += [{"method": m, "labeled": 2, "iterations": 4000, "fold": f, "case": c,
              "dice_foreground": base - 0.1 * (m == "byol")}
             for m in ("scratch", "byol") for f in (5, 8, 11) for c, base in (("a", 0.4), ("b", 0.5))]
    report = benchmark_report(rows, str(tmp_path / "b"), {})
    plotted = {r["label"]: r for r in difference_rows(report["statistics"])}
    assert list(plotted) == ["byol, M = 2, 4000 it", "scratch_rerun, M = 5, 4000 it", "pcl, M = 5, 4000 it",
                             "mae, M = 5, 4000 it"]  # by label budget, then in the table's order
    assert [plotted[k]["finding"] for k in plotted] == ["worse", "none", "none", "better"]
    assert plotted["pcl, M = 5, 4000 it"]["band"] == pytest.approx(0.18374, abs=1e-5)
    assert plotted["byol, M = 2, 4000 it"]["band"] == 0.0
    assert plotted["mae, M = 5, 4000 it"]["mean"] == pytest.approx(0.2)
    assert (tmp_path / "b_differences.png").stat().st_size > 10_000
    assert str(tmp_path / "b_differences.png") in report["files"]
    assert "Differences at a glance: b_differences.png" in report["markdown"]
    # one arm alone has nothing to compare: no differences plot
    alone = benchmark_report([r for r in rows if r["method"] == "scratch"], str(tmp_path / "s"), {})
    assert not (tmp_path / "s_differences.png").exists() and "at a glance" not in alone["markdown"]


@pytest.mark.parametrize("length", ["cpu500it", "cpu1000it", "cpu2000it", "cpu4000it", "cpu8000it", "cpu16000it",
                                    "tiny"])
def test_curve_points_train_the_iterations_they_report(length):
    from nnunet_ssl.integration.trainers import trainer_class
    cells = plan_cells(["scratch", "nnunet", "pcl"], [{"labeled": 5, "base_fold": 0, "fold": 6}], [length])
    for cell in cells:
        cls = trainer_class(cell.trainer)
        assert cls.NUM_EPOCHS * cls.ITERATIONS_PER_EPOCH == cell.iterations


def test_learning_curve_rows_are_grouped_by_iterations(tmp_path):
    rows = [{"method": m, "labeled": 5, "iterations": it, "fold": f, "case": c, "dice_foreground": v}
            for m, it, f, c, v in (("scratch", 500, 6, "a", 0.2), ("scratch", 500, 6, "b", 0.4),
                                   ("scratch", 2000, 6, "a", 0.6), ("scratch", 2000, 6, "b", 0.8),
                                   ("nnunet", 500, 6, "a", 0.3), ("nnunet", 500, 6, "b", 0.5),
                                   ("nnunet", 2000, 6, "a", 0.7), ("nnunet", 2000, 6, "b", 0.9))]
    report = benchmark_report(rows, str(tmp_path / "curve"), {})
    assert "| scratch | 5 | 2000 | 1 | 0.700 ± 0.000 |" in report["markdown"]
    assert "| nnunet | 5 | 500 | 1 | 0.400 ± 0.000 | 0.100 ± 0.000 | 1/1 | +0.100 [+0.100, +0.100] |" \
        in report["markdown"]
    assert "- scratch, M = 5: not reached within the measured lengths" in report["markdown"]  # 500 -> 2000 only
    assert (tmp_path / "curve.png").is_file()


def test_tiny_matrix_runs_resumes_and_writes_results(pretrained, tmp_path, monkeypatch):
    out = tmp_path / "bench"
    args = [script("nnUNetv2_ssl_benchmark"), "-d", str(DATASET_ID), "-p", PLANS, "--methods", "scratch", "nnunet",
            "pcl", "--labeled", "2", "--base-folds", "0", "--length", "tiny", "--finetune", "default", "lowEncoderLR",
            "-device", "cpu", "-o", str(out)]
    # exported in the user's shell: every pcl cell (pinned) would refuse it, so the cells must not see it
    monkeypatch.setenv("nnUNet_ssl_weights", str(tmp_path / "some_other_checkpoint.pth"))
    first = run_command(args)
    assert "note: nnUNet_ssl_weights set in this shell: not passed to the benchmark's commands" in first.stdout
    monkeypatch.delenv("nnUNet_ssl_weights")
    shutil.copy(out / "benchmark.csv", tmp_path / "earlier.csv")  # what an earlier session leaves behind
    assert "| scratch | 2 | 4 | 1 |" in first.stdout and "| pcl | 2 | 4 | 1 |" in first.stdout
    assert "| pcl+lowEncoderLR | 2 | 4 | 1 |" in first.stdout and "| nnunet | 2 | 4 | 1 |" in first.stdout
    assert "Pretraining:" in first.stdout and "| pcl | " in first.stdout.split("Pretraining:")[1]
    assert [p["method"] for p in json.load(open(out / "benchmark_pretraining.json"))] == ["pcl"]
    mapping = json.load(open(os.path.join(pretrained["env"]["nnUNet_preprocessed"], pretrained["name"],
                                          "label_budget_folds.json")))["folds"]
    fold = next(r["fold"] for r in mapping if r["labeled"] == 2 and r["base_fold"] == 0)
    splits = json.load(open(os.path.join(pretrained["env"]["nnUNet_preprocessed"], pretrained["name"],
                                         "splits_final.json")))
    with open(out / "benchmark.csv") as f:
        rows = list(csv.DictReader(f))
    assert {r["method"] for r in rows} == {"scratch", "nnunet", "pcl", "pcl+lowEncoderLR"}
    assert {r["fold"] for r in rows} == {str(fold)} and {r["iterations"] for r in rows} == {"4"}
    assert sorted(r["case"] for r in rows if r["method"] == "pcl") == sorted(splits[fold]["val"])
    assert all(0 <= float(r["dice_foreground"]) <= 1 for r in rows)
    assert {"ppv", "ltpr", "lfpr", "dice_1"} <= set(rows[0])  # binary task: lesion-wise metrics too
    for ext in ("md", "json", "png"):
        assert (out / f"benchmark.{ext}").is_file()
    assert (out / "benchmark_training.png").is_file() and "benchmark_training.png" in first.stdout

    import torch  # the stock arm is nnU-Net's own trainer (no warm-up) at the requested length
    stock = torch.load(os.path.join(pretrained["env"]["nnUNet_results"], pretrained["name"],
                                    f"nnUNetTrainer_tiny__{PLANS}__3d_fullres", f"fold_{fold}", "checkpoint_final.pth"),
                       map_location="cpu", weights_only=False)
    assert stock["trainer_name"] == "nnUNetTrainer_tiny" and stock["current_epoch"] == 2
    assert stock["logging"]["lrs"][0] == pytest.approx(0.01)  # nnU-Net's poly starts at 1e-2
    matched = torch.load(os.path.join(pretrained["env"]["nnUNet_results"], pretrained["name"],
                                      f"SSLScratchTrainer_tiny__{PLANS}__3d_fullres", f"fold_{fold}",
                                      "checkpoint_final.pth"), map_location="cpu", weights_only=False)
    assert matched["logging"]["lrs"] == pytest.approx(stock["logging"]["lrs"])  # matched scratch: stock's schedule

    second = run_command(args)  # resumable: finished cells are skipped
    assert second.stdout.count("already done") == 4

    # a cell stopped before its validation continues from its checkpoint with --c instead of starting over
    scratch_fold = os.path.join(pretrained["env"]["nnUNet_results"], pretrained["name"],
                                f"SSLScratchTrainer_tiny__{PLANS}__3d_fullres", f"fold_{fold}")
    os.remove(os.path.join(scratch_fold, "validation", "summary.json"))
    logs_before = {f for f in os.listdir(scratch_fold) if f.startswith("training_log")}
    # a report of the finished cells only says what it lacks; without --partial it refuses and says how
    refused = run_command(args + ["--report-only"], check=False)
    assert refused.returncode == 2 and "add --partial" in refused.stderr + refused.stdout
    partial = run_command(args + ["--report-only", "--partial"])
    assert "**Partial**: 1 of 4 cells had not finished" in partial.stdout and "| scratch |" not in partial.stdout
    assert f"scratch M=2 fold {fold} tiny" in open(out / "benchmark.md").read()
    # an earlier session's benchmark.csv stands in for the missing cell: neither retrained nor re-evaluated
    merged = run_command(args + ["--report-only", "--earlier", str(tmp_path / "earlier.csv")])
    assert "| scratch | 2 | 4 | 1 |" in merged.stdout and "**Partial**" not in merged.stdout
    assert f"({len(splits[fold]['val'])} distinct validation cases in all)" in merged.stdout  # read rows count once
    assert not os.path.isfile(os.path.join(scratch_fold, "validation", "summary.json"))
    # a report of cells pretrained on another machine names the pretraining it cannot summarise, no traceback
    final = os.path.join(pretrained["folder"], "checkpoint_final.pth")
    os.rename(final, final + ".away")
    try:
        elsewhere = run_command(args + ["--report-only", "--earlier", str(tmp_path / "earlier.csv")])
    finally:
        os.rename(final + ".away", final)
    assert "Pretraining of pcl: not summarised, no finished pretraining" in elsewhere.stdout
    assert "Pretraining:" not in elsewhere.stdout and "| scratch | 2 | 4 | 1 |" in elsewhere.stdout
    (tmp_path / "not_a_benchmark.csv").write_text("case,dice\na,0.5\n")
    wrong = run_command(args + ["--report-only", "--earlier", str(tmp_path / "not_a_benchmark.csv")], check=False)
    assert wrong.returncode == 2 and "is not a benchmark.csv with per-case rows (no method" in wrong.stderr
    third = run_command(args)
    assert third.stdout.count("already done") == 3
    assert os.path.isfile(os.path.join(scratch_fold, "validation", "summary.json"))
    new_log = [f for f in os.listdir(scratch_fold) if f.startswith("training_log") and f not in logs_before]
    assert len(new_log) == 1 and "Epoch 0" not in open(os.path.join(scratch_fold, new_log[0])).read()  # not retrained

    # the noise floor from another run of the scratch cells (e.g. on another machine), not from the same run
    same = run_command(args + ["--report-only", "--rerun", str(tmp_path / "earlier.csv")], check=False)
    assert same.returncode == 2 and "holds the very scratch run this report already has" in same.stderr
    with open(tmp_path / "earlier.csv") as f:
        other_run = [{**r, "dice_foreground": float(r["dice_foreground"]) / 2} for r in csv.DictReader(f)]
    with open(tmp_path / "other_run.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(other_run[0]))
        writer.writeheader()
        writer.writerows(other_run)
    noise = run_command(args + ["--report-only", "--rerun", str(tmp_path / "other_run.csv")])
    assert "| scratch_rerun | 2 | 4 | 1 |" in noise.stdout
    assert "scratch_rerun: the scratch cells as run in" in noise.stdout
