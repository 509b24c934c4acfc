"""Run a benchmark matrix: pretraining methods x label budgets x folds, through the stock commands.

Each cell is ``nnUNetv2_train ID CONFIG FOLD -tr <trainer>`` on a label-budget fold (see
data/folds.py); finished cells (a validation summary exists) are skipped, so an interrupted
benchmark resumes where it stopped. Cells are evaluated on nnU-Net's validation predictions of
``checkpoint_final``: no checkpoint is ever selected on the fold that is reported.
"""
import os
from dataclasses import dataclass
from typing import Callable
from os.path import isfile, join

from nnunet_ssl.benchmark.arms import BASE_FINETUNES, REFERENCE_ARMS, SCRATCH, SCRATCH_RERUN, split_arm
from nnunet_ssl.benchmark.metrics import case_metrics
from nnunet_ssl.benchmark.report import class_onsets
from nnunet_ssl.benchmark.steps import StepRunner
from nnunet_ssl.errors import SSLUserError
from nnunet_ssl.integration.locations import METHOD_ENV, WEIGHTS_ENV, model_folder


@dataclass(frozen=True)
class Cell:
    method: str  # a reference arm (REFERENCE_ARMS) or a pretraining method
    labeled: int
    base_fold: int
    fold: int  # the label-budget fold of splits_final.json
    trainer: str
    finetune: str = "default"  # fine-tuning recipe (integration/trainers/registry.py RECIPES)
    length: str = ""  # named length (integration/trainers/lengths.py); "" is nnU-Net's 1000 epochs

    @property
    def arm(self) -> str:
        """What the tables call this arm: the method, plus the recipe when it is not the default."""
        return self.method if self.finetune == "default" else f"{self.method}+{self.finetune}"

    @property
    def iterations(self) -> int:
        from nnunet_ssl.integration.trainers.lengths import LENGTHS, Length
        return (LENGTHS[self.length] if self.length else Length(1000)).iterations


def trainer_name(method: str, length: str, finetune: str = "default") -> str:
    """The trainer of an arm: a reference arm's, or SSLInitTrainer pinned to one pretraining and recipe;
    a BASE_FINETUNES choice swaps the base (scratch -> SSLMeanTeacherTrainer, a method ->
    SSLInitMeanTeacherTrainer_<method>)."""
    from nnunet_ssl.integration.trainers.registry import compose_name
    if finetune in BASE_FINETUNES:
        scratch_base, init_base, recipe = BASE_FINETUNES[finetune]
        if method == SCRATCH:
            return compose_name(scratch_base, None, recipe, length)
        if method in REFERENCE_ARMS:
            raise SSLUserError(f"--finetune {finetune} has no {method!r} arm.",
                               "it runs for scratch and for pretraining methods")
        return compose_name(init_base, method, recipe, length)
    if method in REFERENCE_ARMS:
        base, recipe = REFERENCE_ARMS[method]
        return compose_name(base, None, recipe if finetune == "default" else finetune, length)
    return compose_name("SSLInitTrainer", method, finetune, length)


def plan_cells(methods: list[str], rows: list[dict], lengths: list[str] | str,
               finetunes: tuple[str, ...] = ("default",)) -> list[Cell]:
    """Every arm at every length: length by length (a learning curve fills evenly), the reference arms
    once each, every pretraining method once per fine-tuning recipe; scratch also once per
    BASE_FINETUNES choice (its matched control, e.g. scratch+meanTeacher). A method written as an arm
    (``mae+fullNetwork``) runs with that recipe only, so arms on different recipes share one matrix."""
    from nnunet_ssl.integration.trainers.lengths import LENGTHS
    from nnunet_ssl.integration.trainers.registry import RECIPES, trainer_class
    lengths = [lengths] if isinstance(lengths, str) else list(lengths)
    # recipes SSLScratchTrainer has too change the schedule, not the init (e.g. linearWarmup): scratch gets one
    schedule_recipes = (set(RECIPES["SSLScratchTrainer"]) & set(RECIPES["SSLInitTrainer"])) - {"default"}
    known_recipes = {r for recipes in RECIPES.values() for r in recipes} | set(BASE_FINETUNES)
    pinned = [recipe for _, recipe in map(split_arm, methods) if recipe]
    unknown = [f for f in (*finetunes, *pinned) if f not in known_recipes]
    if unknown:
        raise SSLUserError(f"unknown fine-tuning recipe(s) {unknown}.",
                           f"use --finetune with {sorted(RECIPES['SSLInitTrainer']) + sorted(BASE_FINETUNES)}")
    bad_lengths = [length for length in lengths if length and length not in LENGTHS]
    if bad_lengths:
        raise SSLUserError(f"no trainer length {bad_lengths[0]!r}.",
                           f"use --length with one or more of {list(LENGTHS)} (or '' for the full nnU-Net length)")
    cells = []
    for length in lengths:
        for method, recipe in map(split_arm, methods):
            # scratch once per choice that changes its schedule or base too: each such arm has its own control
            scratch_finetunes = ("default", *(f for f in finetunes if f in BASE_FINETUNES or f in schedule_recipes))
            for finetune in ((recipe,) if recipe else scratch_finetunes if method == SCRATCH
                             else ("default",) if method in REFERENCE_ARMS else finetunes):
                name = trainer_name(method, length, finetune)
                if trainer_class(name) is None:
                    raise SSLUserError(f"no trainer {name!r} for method {method!r} and length {length!r}.",
                                       "see nnunet_ssl/integration/trainers/registry.py for the names")
                cells += [Cell(method, r["labeled"], r["base_fold"], r["fold"], name, finetune, length) for r in rows]
    return cells


# variables that choose a pretraining: every pretrained cell's trainer name pins its method (SSLInitTrainer_<method>),
# so no cell needs them, and one exported in the shell would make every arm load the same checkpoint (a pinned
# trainer refuses it)
PRETRAINING_CHOICE_ENV = (WEIGHTS_ENV, METHOD_ENV)


def cell_environment(environ) -> tuple[dict, list[str]]:
    """The environment the benchmark's commands run in: ``environ`` without PRETRAINING_CHOICE_ENV; and the
    names it removed."""
    removed = [name for name in PRETRAINING_CHOICE_ENV if name in environ]
    return {k: v for k, v in environ.items() if k not in PRETRAINING_CHOICE_ENV}, removed


def cell_folder(cell: Cell, dataset_name: str, configuration: str, plans: str, results_root: str) -> str:
    """nnU-Net's fold folder of a cell: checkpoints, and its validation/ predictions and summary.json."""
    return join(model_folder(dataset_name, cell.trainer, plans, configuration, results_root), f"fold_{cell.fold}")


def run_matrix(dataset_id: int, dataset_name: str, configuration: str, plans: str, cells: list[Cell],
               device: str, runner: StepRunner, results_root: str, env: dict | None = None) -> None:
    for cell in cells:
        folder = cell_folder(cell, dataset_name, configuration, plans, results_root)
        # a cell stopped part-way (a session ended) continues from its last checkpoint with nnU-Net's --c
        resume = any(isfile(join(folder, f)) for f in ("checkpoint_latest.pth", "checkpoint_final.pth"))
        runner.run(f"{cell.arm}_labeled{cell.labeled}_fold{cell.fold}_{cell.iterations}it",
                   ["nnUNetv2_train", str(dataset_id), configuration, str(cell.fold), "-p", plans, "-tr",
                    cell.trainer, "-device", device] + (["--c"] if resume else []),
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
        validation = join(cell_folder(cell, dataset_name, configuration, plans, results_root), "validation")
        cases = sorted(f[: -len(ending)] for f in os.listdir(validation) if f.endswith(ending))
        for case in cases:
            metrics = case_metrics(join(validation, case + ending), join(reference, case + ending), labels,
                                   lesion_label=labels[0] if binary else None)
            row = {"method": cell.arm, "labeled": cell.labeled, "iterations": cell.iterations,
                   "base_fold": cell.base_fold, "fold": cell.fold, "trainer": cell.trainer, "case": case,
                   "dice_foreground": metrics["mean_dice"],
                   **{f"dice_{label}": value for label, value in metrics["dice"].items()}}
            if binary:
                row.update({k: metrics["lesion"][k] for k in ("ppv", "ltpr", "lfpr")})
            rows.append(row)
    if not rows:
        raise SSLUserError("no validation predictions found to evaluate.", "run the benchmark without --report-only")
    return rows


CASE_ROW_KEYS = ("method", "labeled", "iterations", "base_fold", "fold", "trainer", "case", "dice_foreground")
COUNT_KEYS, TEXT_KEYS = ("labeled", "iterations", "base_fold", "fold"), ("method", "trainer", "case")
EARLIER_FIX = "give the benchmark.csv that nnUNetv2_ssl_benchmark wrote, unedited"


def read_case_csv(path: str, option: str, missing_iterations: int | None = None) -> list[dict]:
    """The per-case rows of a benchmark.csv, typed like this run's own rows (so a case counts once however
    its rows were read). Every row is checked: a row that is short, long, or holds a count or a metric
    that is no number is refused with its line, never reported. A CSV without an ``iterations`` column (written
    before 2026-12-03) is refused, or read with ``missing_iterations`` as every row's (0: the tables show '—')
    where one is given; ``option`` names where the file came from in the messages."""
    import csv
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            found = [(reader.line_num, row) for row in reader]
    except IsADirectoryError:
        raise SSLUserError(f"{option} {path} is a folder, not a benchmark.csv.", EARLIER_FIX) from None
    except OSError as e:
        raise SSLUserError(f"cannot read {option} {path}: {e.strerror}.", "give the benchmark.csv of an earlier run")
    except UnicodeDecodeError as e:
        raise SSLUserError(f"{option} {path} is not a text CSV file (byte {e.start} is not UTF-8 text).",
                           EARLIER_FIX) from None
    except csv.Error as e:
        raise SSLUserError(f"{option} {path} is not a readable CSV file (line {reader.line_num}: {e}).",
                           EARLIER_FIX) from None
    if missing_iterations is not None and found and "iterations" not in found[0][1]:
        found = [(line, _with_iterations(row, missing_iterations)) for line, row in found]
    lacking = [k for k in CASE_ROW_KEYS if not found or k not in found[0][1]]
    if lacking:
        raise SSLUserError(f"{option} {path} is not a benchmark.csv with per-case rows (no {', '.join(lacking)}).",
                           "give the benchmark.csv that nnUNetv2_ssl_benchmark wrote")
    return [_typed_row(row, f"{option} {path} line {line}") for line, row in found]


def _with_iterations(row: dict, iterations: int) -> dict:
    """``row`` with an iterations column where the benchmark writes it (after labeled)."""
    items = list(row.items())
    at = next((i + 1 for i, (key, _) in enumerate(items) if key == "labeled"), len(items))
    return dict(items[:at] + [("iterations", str(iterations))] + items[at:])


def _typed_row(row: dict, where: str) -> dict:
    """One CSV row with counts as int and metrics as float; SSLUserError naming ``where`` otherwise."""
    if None in row or None in row.values():  # csv.DictReader's marks of a long or a short row
        header = [k for k in row if k is not None]
        fields = sum(row[k] is not None for k in header) + len(row.get(None) or [])
        raise SSLUserError(f"{where} has {fields} fields where the header has {len(header)}: a damaged or edited "
                           "file.", EARLIER_FIX)
    typed = {}
    for key, value in row.items():
        if key in TEXT_KEYS:
            typed[key] = value
            continue
        try:
            typed[key] = int(value) if key in COUNT_KEYS else float(value) if value != "" else float("nan")
        except ValueError:
            kind = "a whole number" if key in COUNT_KEYS else "a number"
            raise SSLUserError(f"{where}: {key} = {value!r} is not {kind}.", EARLIER_FIX) from None
    if typed["dice_foreground"] != typed["dice_foreground"] and row["dice_foreground"] == "":
        raise SSLUserError(f"{where}: dice_foreground is empty.", EARLIER_FIX)
    return typed


def case_dice(rows: list[dict]) -> dict[tuple[int, str], float]:
    """Per-case foreground Dice by (fold, case): what tells two runs apart."""
    return {(r["fold"], r["case"]): float(r["dice_foreground"]) for r in rows}


def earlier_case_rows(csv_paths, cells: list[Cell], option: str = "--earlier",
                      validation_cases: Callable[[int], list[str]] | None = None,
                      empty_reference: Callable[[str], bool] | None = None) -> tuple[list[dict], list[Cell]]:
    """The per-case rows of ``cells`` found in earlier benchmark.csv files (a cell is its arm, trainer and
    fold: a scratch_rerun row taken from --rerun has scratch's trainer but is not scratch), and those
    cells. A cell found in two files counts once when both hold the same per-case Dice (one run that two
    reports copied, as each report carries its scratch cells); with different Dice it is refused: which
    run counts would be a guess. With ``validation_cases`` (fold -> its validation cases) a cell must hold
    each of them once, nothing else: a fold mean over some of its cases would pass for the fold's. A NaN
    foreground Dice is refused unless ``empty_reference(case)`` says the case has no foreground (its Dice
    is undefined by design, and the evaluation here gives the same NaN)."""
    wanted = {(c.arm, c.trainer, c.fold): c for c in cells}
    per_cell: dict[tuple, dict[str, list[dict]]] = {}  # cell -> file -> its rows there
    for path in dict.fromkeys(csv_paths):  # a file given twice is read once
        for row in read_case_csv(path, option):
            key = (row["method"], row["trainer"], row["fold"])
            if key in wanted:
                per_cell.setdefault(key, {}).setdefault(path, []).append(row)
    rows = []
    for (arm, trainer, fold), files in per_cell.items():
        (first, first_rows), *others = files.items()
        for path, other_rows in others:
            if case_dice(other_rows) != case_dice(first_rows):
                raise SSLUserError(f"{trainer} fold {fold} is in both {first} and {path}, with different Dice: "
                                   "two runs of one cell.", "give each cell's rows once, from the run that counts")
        for path, cell_rows in files.items():
            _check_earlier_cell(cell_rows, f"{option} {path}: {arm} ({trainer}) fold {fold}",
                                validation_cases(fold) if validation_cases else None, empty_reference)
        rows += first_rows
    return rows, [c for key, c in wanted.items() if key in per_cell]


def _check_earlier_cell(rows: list[dict], where: str, expected: list[str] | None,
                        empty_reference: Callable[[str], bool] | None) -> None:
    """A cell's rows from an earlier CSV are its complete validation: each case once, every Dice defined."""
    cases = [r["case"] for r in rows]
    fix = ("give the complete benchmark.csv that run wrote, or leave that file out and train the cell here "
           "(rows edited out or lost would make the fold's mean rest on its other cases)")
    repeated = sorted({c for c in cases if cases.count(c) > 1})
    if repeated:
        raise SSLUserError(f"{where} lists case {repeated[0]!r} {cases.count(repeated[0])} times.", fix)
    if expected is not None and sorted(cases) != sorted(expected):
        missing, extra = sorted(set(expected) - set(cases)), sorted(set(cases) - set(expected))
        raise SSLUserError(f"{where} has {len(set(cases) & set(expected))} of the fold's {len(expected)} validation "
                           f"cases" + (f" (missing {missing[:3]})" if missing else "")
                           + (f", and cases that are not its validation cases ({extra[:3]}): another split"
                              if extra else "") + ".", fix)
    for row in rows:
        if row["dice_foreground"] != row["dice_foreground"] and not (empty_reference and
                                                                     empty_reference(row["case"])):
            raise SSLUserError(f"{where}: case {row['case']!r} has dice_foreground NaN, but its reference has "
                               "foreground (a NaN Dice there is no evaluation's result, and the fold's mean would "
                               "silently leave the case out).", fix)


def rerun_case_rows(csv_paths, cells: list[Cell], earlier=(), validation_cases=None, empty_reference=None
                    ) -> list[dict]:
    """Another run of this matrix's scratch cells (e.g. on another machine), from its benchmark.csv, as the
    scratch_rerun arm: the run-to-run noise floor without training scratch once more. Every scratch cell
    must be there, since the noise floor pairs folds; checked as earlier_case_rows checks."""
    if any(c.method == SCRATCH_RERUN for c in cells):
        raise SSLUserError("--rerun and the scratch_rerun arm are two sources for one arm.",
                           "leave scratch_rerun out of --methods, or leave --rerun out")
    both = sorted(set(csv_paths) & set(earlier))
    if both:
        raise SSLUserError(f"{both[0]} is given to both --earlier and --rerun: scratch against itself is no noise "
                           "floor.", "give --rerun the CSV of another run")
    scratch = [c for c in cells if c.arm == SCRATCH]
    if not scratch:
        raise SSLUserError("--rerun reports another run of the scratch arm, and --methods has none.",
                           "add scratch to --methods")
    rows, found = earlier_case_rows(csv_paths, scratch, "--rerun", validation_cases, empty_reference)
    lacking = [c for c in scratch if c not in found]
    if lacking:
        raise SSLUserError(f"--rerun has no {lacking[0].trainer} fold {lacking[0].fold} (nor {len(lacking) - 1} "
                           "more scratch cells of this matrix).",
                           "give the benchmark.csv of a run of the same scratch cells, or leave --rerun out")
    return [{**row, "method": SCRATCH_RERUN} for row in rows]


def same_run(rows: list[dict], other: list[dict]) -> bool:
    """Whether two arms' rows are one run read twice: identical per-case Dice on every shared case."""
    mine, theirs = case_dice(rows), case_dice(other)
    shared = mine.keys() & theirs.keys()
    return bool(shared) and all(mine[k] == theirs[k] for k in shared)


def final_training_log(fold_folder: str) -> dict:
    """nnU-Net's per-epoch log (losses, pseudo-Dice, lrs) as saved in a training's checkpoint_final."""
    import torch
    return torch.load(join(fold_folder, "checkpoint_final.pth"), map_location="cpu", weights_only=False)["logging"]


def class_onsets_of_training(fold_folder: str, labels: list[str]) -> dict[str, int | None]:
    """When each class started in one nnU-Net training: its checkpoint_final's per-epoch pseudo-Dice."""
    return class_onsets(final_training_log(fold_folder)["dice_per_class_or_region"], labels)


def training_curves(cells: list[Cell], dataset_name: str, configuration: str, plans: str,
                    results_root: str) -> dict[tuple[str, int, int], list[list[float]]]:
    """Per arm (arm, labeled, iterations): each fold's per-epoch pseudo-Dice from its checkpoint_final's log
    (nnU-Net's EMA of the foreground Dice on validation batches). Cells without a checkpoint here (taken
    from --earlier) are left out."""
    curves: dict[tuple[str, int, int], list[list[float]]] = {}
    for cell in cells:
        folder = cell_folder(cell, dataset_name, configuration, plans, results_root)
        if isfile(join(folder, "checkpoint_final.pth")):
            curves.setdefault((cell.arm, cell.labeled, cell.iterations), []).append(
                list(final_training_log(folder)["ema_fg_dice"]))
    return curves


def pretraining_summary(method: str, folder: str) -> dict:
    """Steps, wall time and the last epoch's metrics of a finished pretraining (its
    checkpoint_final.json and progress.json), for the benchmark's pretraining table."""
    import json

    from nnunet_ssl.blocks.health import health_plateau
    with open(join(folder, "checkpoint_final.json")) as f:
        meta = json.load(f)
    history = []
    if isfile(join(folder, "progress.json")):
        with open(join(folder, "progress.json")) as f:
            history = json.load(f)
    schedule = meta["hparams"]["schedule"]
    return {"method": method, "epochs": meta["epochs_completed"],
            "steps": meta["epochs_completed"] * schedule["iterations_per_epoch"], "batch_size": schedule["batch_size"],
            "minutes": sum(e.get("seconds", 0.0) for e in history) / 60, "final_metrics": meta["final_metrics"],
            "plateau": health_plateau(history)}


def missing_summaries(cells: list[Cell], dataset_name: str, configuration: str, plans: str,
                      results_root: str) -> list[Cell]:
    return [c for c in cells
            if not isfile(join(cell_folder(c, dataset_name, configuration, plans, results_root), "validation",
                               "summary.json"))]
