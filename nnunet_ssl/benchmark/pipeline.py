"""The benchmark pipeline behind nnUNetv2_ssl_benchmark: pretraining methods x label budgets x folds,
with docs-ready results.

1. adds the label-budget folds (as nnUNetv2_ssl_splits), 2. pretrains every method that has no
finished pretraining yet (nnUNetv2_ssl_pretrain), 3. fine-tunes every cell with the stock
nnUNetv2_train (scratch: SSLScratchTrainer; a method: SSLInitTrainer_<method>, the same schedule),
skipping finished cells, 4. evaluates nnU-Net's validation predictions and writes a CSV, a JSON of
every per-case number, a markdown table and a Dice-vs-labels plot.

Every check runs before the first write: a refused benchmark leaves no folds, folders or pretrainings.
"""
import os
from dataclasses import dataclass
from os.path import join

from nnunet_ssl.errors import SSLUserError


@dataclass(frozen=True)
class BenchmarkSpec:
    """Every option of one benchmark (the command's options, by the same names)."""
    dataset: str
    methods: tuple[str, ...]  # pretraining methods, reference arms (benchmark/arms.py) and METHOD+RECIPE arms
    budgets: tuple[int, ...]  # label budgets (--labeled)
    base_folds: tuple[int, ...]
    lengths: tuple[str, ...]  # named trainer lengths; "" is nnU-Net's 1000 epochs
    configuration: str = "3d_fullres"
    plans: str = "nnUNetPlans"
    seed: int = 0  # of the label-budget draw
    device: str = "cuda"
    pretrain_recipe: str | None = None
    output: str | None = None  # default <results>/DatasetX/ssl_benchmark
    report_only: bool = False
    finetunes: tuple[str, ...] = ("default",)
    groups_file: str | None = None
    group_pattern: str | None = None
    partial: bool = False  # with report_only: report the finished cells
    earlier: tuple[str, ...] = ()  # benchmark.csv of earlier runs
    rerun: tuple[str, ...] = ()  # benchmark.csv of another run of the scratch cells

    def arm_methods(self) -> list[str]:
        """The method of each arm: an arm pinned to a recipe (mae+fullNetwork) pretrains and reports as its method."""
        from nnunet_ssl.benchmark.arms import split_arm
        return [method for method, _ in map(split_arm, self.methods)]

    def check(self) -> None:
        """What needs no file read: the options together, the device (a report trains nothing and needs none) and
        the methods."""
        from nnunet_ssl.benchmark.arms import REFERENCE_ARMS
        from nnunet_ssl.integration.device import check_device
        from nnunet_ssl.methods import require_methods
        if self.partial and not self.report_only:
            raise SSLUserError("--partial only applies to --report-only (a run without it trains every cell); "
                               "nothing was written.", "add --report-only, or leave --partial out")
        if not self.report_only:
            check_device(self.device)
        require_methods(self.arm_methods(), "--methods", also=tuple(REFERENCE_ARMS))


def run_benchmark(spec: BenchmarkSpec) -> dict:
    """Run (or, with report_only, only report) the benchmark of ``spec``; returns the report. Pretraining
    uses every case's image (no labels), including the validation cases of the folds."""
    import json

    from nnunetv2.paths import nnUNet_preprocessed

    from nnunet_ssl.benchmark.arms import REFERENCE_ARMS, SCRATCH
    from nnunet_ssl.benchmark.metrics import has_foreground
    from nnunet_ssl.benchmark.plots import plot_training_curves
    from nnunet_ssl.benchmark.report import benchmark_report, pretraining_table
    from nnunet_ssl.benchmark.run import (cell_environment, earlier_case_rows, evaluate_cells, missing_summaries,
                                          plan_cells, pretraining_summary, rerun_case_rows, run_matrix, same_run,
                                          training_curves)
    from nnunet_ssl.benchmark.steps import StepRunner
    from nnunet_ssl.integration import locations
    from nnunet_ssl.integration.dataset import dataset_id_of, open_preprocessed
    from nnunet_ssl.integration.device import cpu_worker_env
    from nnunet_ssl.integration.pretraining import PretrainSpec
    from nnunet_ssl.integration.splits import plan_label_budget_folds, write_label_budget_folds
    from nnunet_ssl.methods.recipes import load_recipe

    # every check first: nothing (folds, folders, pretrainings) is written before a refusal
    spec.check()  # what needs no file read
    dataset, configuration, plans, device = spec.dataset, spec.configuration, spec.plans, spec.device
    # lists, as the messages and benchmark_setup.json have always shown them
    methods, budgets, base_folds = list(spec.methods), list(spec.budgets), list(spec.base_folds)
    lengths, finetunes, seed = list(spec.lengths), spec.finetunes, spec.seed
    pretrain_recipe, report_only, partial, earlier, rerun = (spec.pretrain_recipe, spec.report_only, spec.partial,
                                                             spec.earlier, spec.rerun)
    groups_file, group_pattern = spec.groups_file, spec.group_pattern
    arm_methods = spec.arm_methods()
    pretraining_methods = list(dict.fromkeys(m for m in arm_methods if m not in REFERENCE_ARMS))
    data = open_preprocessed(dataset, configuration, plans)
    dataset_id = dataset_id_of(data.dataset_name)
    results_root = locations.results_root(needed_for="the benchmark")
    folders = {m: locations.pretraining_folder(data.dataset_name, m, plans, configuration) for m in pretraining_methods}

    def not_pretrained() -> list[str]:  # asked before pretraining and again when reporting
        return [m for m, folder in folders.items() if not os.path.isfile(join(folder, locations.FINAL))]

    out_dir = spec.output or join(results_root, data.dataset_name, "ssl_benchmark")
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise SSLUserError(f"-o {out_dir} is a file, not a folder; nothing was written.",
                           "pass -o a folder (new or an earlier benchmark's), or move that file away")
    to_pretrain = [] if report_only else not_pretrained()
    if pretrain_recipe:
        recipe_method = load_recipe(pretrain_recipe).get("method")
        others = [m for m in to_pretrain if recipe_method not in (None, m)]
        if others:
            raise SSLUserError(f"--pretrain-recipe {pretrain_recipe} is a {recipe_method} recipe, but {others} "
                               "would pretrain with it too.",
                               f"pretrain {others} first (nnUNetv2_ssl_pretrain -m ...), or give a recipe without "
                               "a method")
        if not to_pretrain:  # an option the run would ignore: say so
            print(f"note: --pretrain-recipe {pretrain_recipe} is not used: "
                  + ("--report-only pretrains nothing" if report_only else
                     f"every method ({', '.join(folders) or 'none'}) has a finished pretraining already"))
    for method in to_pretrain:  # the recipe's options as nnUNetv2_ssl_pretrain will take them, before any write
        PretrainSpec(dataset, configuration, plans, method, device, recipe=pretrain_recipe).check()
    fold_plan = plan_label_budget_folds(data.dataset_name, budgets, base_folds, seed, groups_file, group_pattern)
    if report_only and fold_plan.changes_splits:
        raise SSLUserError(f"--report-only: {fold_plan.splits_file} does not hold these label-budget folds yet "
                           f"(budgets {budgets}, base folds {base_folds}, seed {seed}), so none of their cells was "
                           "trained; nothing was written.",
                           "run without --report-only to add the folds and train, or give the budgets, base folds "
                           "and seed of the benchmark you want to report")
    rows = fold_plan.rows
    cells = plan_cells(methods, rows, lengths, tuple(finetunes))
    # cells finished in an earlier session (its benchmark.csv) are neither retrained nor evaluated again; each
    # must hold its fold's whole validation, every Dice defined (or its reference without foreground)
    foreground = sorted(v for v in data.dataset_json["labels"].values() if isinstance(v, int) and v > 0)
    references = join(str(nnUNet_preprocessed), data.dataset_name, "gt_segmentations")

    def empty_reference(case: str) -> bool:
        path = join(references, case + data.dataset_json["file_ending"])
        return os.path.isfile(path) and not has_foreground(path, foreground)

    reused_rows, reused = earlier_case_rows(earlier, cells, "--earlier", fold_plan.validation_cases,
                                            empty_reference)
    rerun_rows = rerun_case_rows(rerun, cells, earlier, fold_plan.validation_cases, empty_reference) if rerun else []
    to_train = [c for c in cells if c not in reused]
    if not report_only:
        write_label_budget_folds(fold_plan)
        os.makedirs(out_dir, exist_ok=True)
        cpu_env = cpu_worker_env(device)
        env, removed = cell_environment(os.environ)
        if removed:
            print(f"note: {' and '.join(removed)} set in this shell: not passed to the benchmark's commands (each "
                  "pretrained arm loads the pretraining its trainer's name pins; the variables would override it)")
        runner = StepRunner(env, join(out_dir, "logs"), total_steps=len(to_pretrain) + len(to_train))
        for method in to_pretrain:
            runner.run(f"pretrain_{method}", ["nnUNetv2_ssl_pretrain", "-d", str(dataset_id), "-c", configuration,
                                              "-p", plans, "-m", method, "-device", device]
                       + (["--recipe", pretrain_recipe] if pretrain_recipe else []),
                       progress=r"epoch \d+, loss", env=cpu_env)
        run_matrix(dataset_id, data.dataset_name, configuration, plans, to_train, device, runner, results_root,
                   cpu_env)
    missing = missing_summaries(to_train, data.dataset_name, configuration, plans, results_root)
    finished = [c for c in to_train if c not in missing]
    if missing and not (partial and (finished or reused)):
        raise SSLUserError(f"{len(missing)} of {len(cells)} cells have no finished training yet "
                           f"(e.g. {missing[0].trainer} fold {missing[0].fold}).",
                           "run without --report-only" + (", or add --partial to report the finished cells"
                                                          if finished or reused else ""))
    os.makedirs(out_dir, exist_ok=True)  # a report that is refused above writes nothing
    case_rows = reused_rows + (evaluate_cells(finished, data.dataset_name, configuration, plans, results_root,
                                              str(nnUNet_preprocessed), data.dataset_json) if finished else [])
    if rerun_rows:  # the noise floor: scratch as run here (or --earlier) against scratch as run in --rerun
        if same_run([r for r in case_rows if r["method"] == SCRATCH], rerun_rows):
            raise SSLUserError("--rerun holds the very scratch run this report already has (identical Dice on "
                               "every case).", "give --rerun the CSV of another run of the scratch cells")
        case_rows += rerun_rows
    class_names = {str(v): k for k, v in data.dataset_json["labels"].items() if isinstance(v, int)}
    report = benchmark_report(case_rows, join(out_dir, "benchmark"), class_names)
    curves = training_curves(finished, data.dataset_name, configuration, plans, results_root)
    if curves:  # when each arm learns, not only where it ends
        plot_training_curves(curves, join(out_dir, "benchmark_training.png"))
        report["files"].append(join(out_dir, "benchmark_training.png"))
        append_to_report(report, out_dir, "Training curves: benchmark_training.png, each arm's pseudo-Dice during "
                         "fine-tuning (nnU-Net's EMA on validation batches; shown to see when an arm learns, never "
                         "used to select a model).")
    if rerun_rows:
        append_to_report(report, out_dir, f"scratch_rerun: the scratch cells as run in {', '.join(rerun)} (the "
                         "same trainers and folds run again, not trained here), so its row is the run-to-run noise "
                         "floor of scratch.")
    if missing:  # --partial: say in the table itself what it lacks
        append_to_report(report, out_dir, partial_note(missing, len(cells)))
    # a method whose cells all came from --earlier may have pretrained on another machine
    not_here = not_pretrained()
    pretrained = [pretraining_summary(m, folder) for m, folder in folders.items() if m not in not_here]
    if pretrained:  # how long each method pretrained, and where its health metrics ended
        append_to_report(report, out_dir, "Pretraining:\n\n" + pretraining_table(pretrained))
        with open(join(out_dir, "benchmark_pretraining.json"), "w") as f:
            json.dump(pretrained, f, indent=1)
    if not_here:
        append_to_report(report, out_dir, f"Pretraining of {', '.join(not_here)}: not summarised, no finished "
                         f"pretraining in this nnUNet_results (its cells came from --earlier, or it is still running).")
    with open(join(out_dir, "benchmark_setup.json"), "w") as f:
        json.dump({"dataset": data.dataset_name, "configuration": configuration, "plans": plans,
                   "methods": methods, "budgets": budgets, "base_folds": base_folds, "seed": seed,
                   "lengths": lengths, "finetunes": list(finetunes), "groups": groups_file,
                   "group_pattern": group_pattern, "earlier": list(earlier), "rerun": list(rerun),
                   "cells": [{**c.__dict__, "from_earlier_run": c in reused} for c in cells]}, f, indent=1)
    print("\n" + report["markdown"] + "\n\nwritten: " + ", ".join(report["files"]))
    return report


def append_to_report(report: dict, out_dir: str, text: str) -> None:
    """A paragraph after the table, in the printed markdown and in benchmark.md."""
    report["markdown"] += "\n\n" + text
    with open(join(out_dir, "benchmark.md"), "a") as f:
        f.write("\n" + text + "\n")


def partial_note(missing: list, total: int) -> str:
    shown = ", ".join(f"{c.arm} M={c.labeled} fold {c.fold} {c.length or 'default length'}" for c in missing)
    return (f"**Partial**: {len(missing)} of {total} cells had not finished and are not in this table ({shown}). "
            "Means over folds, curves and plateaus then rest on different folds per arm and length.")
