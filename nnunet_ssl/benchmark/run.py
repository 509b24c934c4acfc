"""Run a benchmark matrix: pretraining methods x label budgets x folds, through the stock commands.

Each cell is ``nnUNetv2_train ID CONFIG FOLD -tr <trainer>`` on a label-budget fold (see
data/folds.py); finished cells (a validation summary exists) are skipped, so an interrupted
benchmark resumes where it stopped. Cells are evaluated on nnU-Net's validation predictions of
``checkpoint_final``: no checkpoint is ever selected on the fold that is reported.
"""
import os
from dataclasses import dataclass
from os.path import isfile, join

from nnunet_ssl.benchmark.metrics import case_metrics
from nnunet_ssl.benchmark.steps import StepRunner
from nnunet_ssl.errors import SSLUserError
from nnunet_ssl.integration.locations import model_folder

SCRATCH = "scratch"


@dataclass(frozen=True)
class Cell:
    method: str  # "scratch" or a pretraining method
    labeled: int
    base_fold: int
    fold: int  # the label-budget fold of splits_final.json
    trainer: str
    finetune: str = "default"  # fine-tuning recipe of a pretrained encoder (trainers/finetune.py)

    @property
    def arm(self) -> str:
        """What the tables call this arm: the method, plus the recipe when it is not the default."""
        return self.method if self.finetune == "default" else f"{self.method}+{self.finetune}"


def trainer_name(method: str, length: str, finetune: str = "default") -> str:
    """The matched pair: from-scratch control, or SSLInitTrainer pinned to one pretraining and recipe."""
    from nnunet_ssl.integration.trainers.finetune import variant_suffix
    suffix = f"_{length}" if length else ""
    if method == SCRATCH:
        return f"SSLScratchTrainer{suffix}"
    return f"SSLInitTrainer_{method}{variant_suffix(finetune)}{suffix}"


def plan_cells(methods: list[str], rows: list[dict], length: str, finetunes: tuple[str, ...] = ("default",)) -> list[Cell]:
    """Scratch once; every pretraining method once per fine-tuning recipe."""
    from nnunet_ssl.integration.trainers import TRAINERS
    from nnunet_ssl.integration.trainers.finetune import FINETUNE_VARIANTS
    unknown = [f for f in finetunes if f not in FINETUNE_VARIANTS]
    if unknown:
        raise SSLUserError(f"unknown fine-tuning recipe(s) {unknown}.", f"use --finetune with {list(FINETUNE_VARIANTS)}")
    cells = []
    for method in methods:
        for finetune in ("default",) if method == SCRATCH else finetunes:
            name = trainer_name(method, length, finetune)
            if name not in TRAINERS:
                lengths = sorted({n.split("_")[-1] for n in TRAINERS if n.startswith("SSLScratchTrainer_")})
                raise SSLUserError(f"no trainer {name!r} for method {method!r} and length {length!r}.",
                                   f"use --length with one of {lengths} (or '' for the full nnU-Net length)")
            cells += [Cell(method, r["labeled"], r["base_fold"], r["fold"], name, finetune) for r in rows]
    return cells


def run_matrix(dataset_id: int, dataset_name: str, configuration: str, plans: str, cells: list[Cell],
               device: str, runner: StepRunner, results_root: str, env: dict | None = None) -> None:
    for cell in cells:
        folder = join(model_folder(dataset_name, cell.trainer, plans, configuration, results_root), f"fold_{cell.fold}")
        runner.run(f"{cell.arm}_labeled{cell.labeled}_fold{cell.fold}",
                   ["nnUNetv2_train", str(dataset_id), configuration, str(cell.fold), "-p", plans, "-tr",
                    cell.trainer, "-device", device],
                   skip_if=join(folder, "validation", "summary.json"), progress=r"Epoch \d+$", env=env)


def evaluate_cells(cells: list[Cell], dataset_name: str, configuration: str, plans: str, results_root: str,
                   preprocessed_root: str, dataset_json: dict) -> list[dict]:
    """One row per (cell, validation case): per-class Dice, foreground Dice, and for binary tasks the
    lesion-wise PPV / LTPR / LFPR on 3D connected components."""
    labels = sorted(v for v in dataset_json["labels"].values() if isinstance(v, int) and v > 0)
    binary = len(labels) == 1
    ending = dataset_json["file_ending"]
    reference = join(preprocessed_root, dataset_name, "gt_segmentations")
    rows = []
    for cell in cells:
        validation = join(model_folder(dataset_name, cell.trainer, plans, configuration, results_root),
                          f"fold_{cell.fold}", "validation")
        cases = sorted(f[: -len(ending)] for f in os.listdir(validation) if f.endswith(ending))
        for case in cases:
            metrics = case_metrics(join(validation, case + ending), join(reference, case + ending), labels,
                                   lesion_label=labels[0] if binary else None)
            row = {"method": cell.arm, "labeled": cell.labeled, "base_fold": cell.base_fold, "fold": cell.fold,
                   "trainer": cell.trainer, "case": case, "dice_foreground": metrics["mean_dice"],
                   **{f"dice_{label}": value for label, value in metrics["dice"].items()}}
            if binary:
                row.update({k: metrics["lesion"][k] for k in ("ppv", "ltpr", "lfpr")})
            rows.append(row)
    if not rows:
        raise SSLUserError("no validation predictions found to evaluate.", "run the benchmark without --report-only")
    return rows


def missing_summaries(cells: list[Cell], dataset_name: str, configuration: str, plans: str,
                      results_root: str) -> list[Cell]:
    return [c for c in cells if not isfile(join(model_folder(dataset_name, c.trainer, plans, configuration, results_root),
                                                f"fold_{c.fold}", "validation", "summary.json"))]
