"""Checks that moving the evidence from docs/benchmarks/ to docs/studies/ kept every reported number.

For each per-case CSV of the old layout (read at commit BEFORE, the last commit with docs/benchmarks/, so this
runs the same before and after the move) it finds the study's CSV now (docs/studies/<id>/benchmark.csv, or
docs/benchmarks/<id>.csv before the move) and checks:
- the CSV is byte-identical to the old one;
- where the old report's JSON exists: its per-case rows equal the CSV's rows (so dropping that second copy loses
  nothing), and the statistics the benchmark's own report code (benchmark/report.py: benchmark_report, with
  benchmark/statistics.py) recomputes from the CSV equal the JSON's: per arm and recipe comparison the mean
  difference, its 95% interval, Wilcoxon p, folds, cases, cases better, the noise band (exact), and the verdict
  (reported when it differs: reports written before 2026-12-05 had no noise floor);
- where no JSON exists: each table row's "mean ± std over folds" of foreground Dice, recomputed from the CSV, is
  found in the old markdown report(s) of that study (rows a hand-written doc renamed are listed, not failed).

    PYTHONPATH=. python docs/records/study_migration_2026-12-07/check_study_migration.py      # exit 1 on any numeric mismatch

(PYTHONPATH=. makes this checkout's report code count where another checkout is installed editable.)
"""
import csv
import io
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))  # the repository root
sys.path.insert(0, ROOT)
from nnunet_ssl.benchmark.report import benchmark_report, fold_means, verdict_text  # noqa: E402

BEFORE = "d8129c3aa0dd543e49dd1e9f4ca397b6a1398b47"  # main when the migration started: the old layout
OLD = "docs/benchmarks"
CLASSES = {"1": "Anterior", "2": "Posterior"}  # every old study is MSD Hippocampus
EXACT = ("mean", "ci_low", "ci_high", "wilcoxon_p", "folds", "cases", "cases_better", "noise_band")
COUNTS = ("labeled", "iterations", "base_fold", "fold")


def git_show(path: str) -> str | None:
    done = subprocess.run(["git", "show", f"{BEFORE}:{path}"], cwd=ROOT, capture_output=True)
    return done.stdout.decode() if done.returncode == 0 else None


def old_files() -> list[str]:
    listing = subprocess.run(["git", "ls-tree", "--name-only", BEFORE, OLD + "/"], cwd=ROOT, capture_output=True,
                             text=True, check=True).stdout.split()
    return [os.path.basename(p) for p in listing]


def typed(row: dict) -> dict:
    out = {}
    for k, v in row.items():
        if k in COUNTS:
            out[k] = int(v)
        else:
            try:
                out[k] = float(v)
            except (TypeError, ValueError):
                out[k] = v
    return out


def current_csv(study: str) -> str:
    for path in (os.path.join(ROOT, "docs", "studies", study, "benchmark.csv"), os.path.join(ROOT, OLD, study + ".csv")):
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(f"no CSV for study {study}")


def same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float) and np.isnan(a) and np.isnan(b):
        return True
    return a == b


def arm_renames(old_rows: list[dict], rows: list[dict]) -> dict[str, str] | None:
    """{old arm: new arm} when the CSV differs from the JSON's rows only by renamed arms and their trainers (row by
    row, every number equal), {} when they are equal, None when anything else differs."""
    if len(old_rows) != len(rows):
        return None
    renames, trainers = {}, {}
    for old, new in zip(old_rows, rows):
        if ({**old, "method": None, "trainer": None} != {**new, "method": None, "trainer": None}
                or renames.setdefault(old["method"], new["method"]) != new["method"]
                or trainers.setdefault(old["trainer"], new["trainer"]) != new["trainer"]):
            return None
    return {k: v for k, v in renames.items() if k != v}


def check_json(study: str, rows: list[dict], old: dict, problems: list[str], notes: list[str]) -> int:
    old_rows = [typed(r) for r in old["rows"]]
    renamed = arm_renames(old_rows, rows)
    if renamed is None:
        problems.append(f"{study}: the JSON's per-case rows differ from the CSV's")
        renamed = {}
    elif renamed:
        notes.append(f"{study}: the CSV renamed arms after its JSON was written: {renamed}; compared under the new names")
    baseline = old.get("baseline", "scratch")
    with tempfile.TemporaryDirectory() as tmp:
        report = benchmark_report(rows, os.path.join(tmp, "benchmark"), CLASSES, baseline=renamed.get(baseline, baseline))
    compared = 0
    for part in ("statistics", "recipe_statistics"):
        new = {"|".join(map(str, k)): v for k, v in report[part].items()}
        for old_key, stats in old.get(part, {}).items():
            arm, rest = old_key.split("|", 1)
            key = f"{renamed.get(arm, arm)}|{rest}"
            if key not in new:
                problems.append(f"{study} {part} {key}: not recomputed from the CSV")
                continue
            for field in EXACT:
                if field in stats and not same(stats[field], new[key].get(field)):
                    problems.append(f"{study} {part} {key} {field}: JSON {stats[field]} recomputed {new[key].get(field)}")
            if stats["verdict"] != verdict_text(new[key]["verdict"]):
                notes.append(f"{study} {part} {key}: verdict then '{stats['verdict']}', recomputed today "
                             f"'{verdict_text(new[key]['verdict'])}'")
            compared += 1
        extra = sorted(set(new) - {f"{renamed.get(k.split('|')[0], k.split('|')[0])}|{k.split('|', 1)[1]}"
                                   for k in old.get(part, {})})
        if extra:
            notes.append(f"{study} {part}: recomputed today but not in the old JSON: {', '.join(extra)}")
    return compared


def check_markdown(study: str, rows: list[dict], markdown: str, problems: list[str], notes: list[str]) -> int:
    table_rows = [line for line in markdown.splitlines() if line.startswith("| ")]
    found = 0
    for (method, labeled, iterations), values in fold_means(rows, "dice_foreground").items():
        cell = f"{np.mean(values):.3f} ± {np.std(values):.3f}"
        if any(line.startswith(f"| {method} |") and cell in line for line in table_rows):
            found += 1
        elif any(cell in line for line in table_rows):
            notes.append(f"{study}: {method} M={labeled} {iterations or ''} {cell} found under another arm name")
            found += 1
        else:
            notes.append(f"{study}: {method} M={labeled} {iterations or ''} {cell} not stated in the old markdown")
    return found


def main() -> int:
    names = old_files()
    problems, notes, checked = [], [], []
    for name in sorted(n for n in names if n.endswith(".csv")):
        study = name[:-4]
        path = current_csv(study)
        with open(path, newline="") as f:
            text = f.read()
        if text != git_show(f"{OLD}/{name}"):
            problems.append(f"{study}: the CSV differs from {OLD}/{name} at {BEFORE[:7]}")
        rows = [typed(r) for r in csv.DictReader(io.StringIO(text))]
        old_json = git_show(f"{OLD}/{study}.json")
        if old_json is not None:
            n = check_json(study, rows, json.loads(old_json), problems, notes)
            checked.append(f"{study}: {len(rows)} rows equal to the JSON's; {n} comparisons recomputed equal")
        else:
            documents = {md: git_show(f"{OLD}/{md}") for md in names if md.endswith(".md") and md != "README.md"}
            markdown = "\n".join(text for md, text in documents.items() if md == study + ".md" or name in text)
            n = check_markdown(study, rows, markdown, problems, notes)
            checked.append(f"{study}: no JSON; {n} of {len(fold_means(rows, 'dice_foreground'))} fold means found "
                           "in the markdown")
    print("\n".join(["Checked:"] + checked + ["", "Notes:"] + notes + ["", "Problems:"] + (problems or ["none"])))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
