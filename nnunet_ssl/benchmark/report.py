"""Per-case 3D Dice from nnU-Net's validation summaries: tables, a plot and raw numbers."""
import json
import os

import numpy as np

from nnunet_ssl.benchmark.plots import (plot_budget_curve, plot_differences, plot_learning_curve,
                                        plot_paired_cases)
from nnunet_ssl.benchmark.statistics import Verdict


def per_case_dice(summary_path: str) -> dict[str, dict[str, float]]:
    """{case: {class label: Dice, 'foreground': mean over classes}} from nnU-Net's summary.json
    (computed by nnU-Net on whole 3D volumes at the original resolution)."""
    with open(summary_path) as f:
        summary = json.load(f)
    result = {}
    for entry in summary["metric_per_case"]:
        case = entry["reference_file"].split("/")[-1].split(".nii")[0].rsplit(".", 1)[0]
        dice = {str(label): float(m["Dice"]) for label, m in entry["metrics"].items()}
        dice["foreground"] = float(np.nanmean(list(dice.values())))
        result[case] = dice
    return result


def _mean_std(values) -> str:
    values = np.asarray(values, dtype=float)
    return f"{np.nanmean(values):.3f} ± {np.nanstd(values):.3f}"


ONE_RUN_CAVEAT = ("One fold, one training run per arm: the interval covers case-to-case spread on these evaluation "
                  "cases, not run-to-run noise (nnU-Net does not seed training; scratch trained twice on the same "
                  "hippocampus folds differed by up to 0.06 fold-mean Dice). It shows the product working, not "
                  "whether pretraining helps: docs/results.md has the multi-fold evidence.")


def paired_dice_report(summaries: dict[str, str], baseline: str, out_prefix: str,
                       class_names: dict[str, str] | None = None, onsets: dict[str, dict] | None = None,
                       note: str = "", run_to_run: str = "not recorded") -> dict:
    """Markdown table of one run (mean ± std over cases, per class and foreground), the paired difference to the
    baseline with a bootstrap interval over this run's cases beside ``run_to_run`` (the spread of that difference
    over recorded runs of the same setting), a box/paired-line plot and a JSON of every per-case number. One run
    gets no verdict: its interval carries case spread, not run-to-run spread. ``onsets``: {arm: {class: first epoch
    it was learned}}; ``note`` goes before the one-run caveat."""
    from nnunet_ssl.benchmark.statistics import compare
    per_method = {name: per_case_dice(path) for name, path in summaries.items()}
    cases = sorted(set.intersection(*(set(d) for d in per_method.values())))
    columns = [k for k in next(iter(per_method.values()))[cases[0]] if k != "foreground"] + ["foreground"]
    names = class_names or {}
    header = "| method | " + " | ".join(f"Dice {names.get(c, 'class ' + c if c != 'foreground' else c)}"
                                        for c in columns) + \
        f" | Δ foreground vs {baseline}, this run [95% CI over its {len(cases)} cases] | Δ run to run |"
    lines = [header, "|" + "---|" * (len(columns) + 3)]
    base = np.array([per_method[baseline][c]["foreground"] for c in cases])
    statistics = {}
    for name, dice in per_method.items():
        cells = [_mean_std([dice[c][col] for c in cases]) for col in columns]
        fg = np.array([dice[c]["foreground"] for c in cases])
        if name == baseline:
            cells += ["—"] * 2
        else:
            stats = compare([fg - base])
            del stats["verdict"]  # one run: no verdict (the interval is over cases only)
            statistics[name] = stats
            cells += [f"{stats['mean']:+.3f} [{stats['ci_low']:+.3f}, {stats['ci_high']:+.3f}]", run_to_run]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    markdown = "\n".join(lines) + f"\n\nPer-case 3D Dice on {len(cases)} evaluation cases (mean ± std over cases)."
    if onsets:
        markdown += "\n\nClass onset (first epoch whose validation pseudo-Dice of the class reached 0.2):\n" + \
            "\n".join(f"- {arm}: " + ", ".join(f"{names.get(c, c)} {'never' if e is None else f'epoch {e}'}"
                                               for c, e in onset.items()) for arm, onset in onsets.items())
    markdown += "\n\n" + (note + " " if note else "") + ONE_RUN_CAVEAT
    with open(out_prefix + ".md", "w") as f:
        f.write(markdown + "\n")
    with open(out_prefix + ".json", "w") as f:
        json.dump({"summaries": summaries, "per_case": per_method, "statistics": statistics, "onsets": onsets},
                  f, indent=1)
    plot = out_prefix + ".png"
    plot_paired_cases(per_method, cases, baseline, plot)
    return {"markdown": markdown, "markdown_file": out_prefix + ".md", "json": out_prefix + ".json", "plot": plot,
            "statistics": statistics,
            "mean_foreground": {n: float(np.mean([d[c]["foreground"] for c in cases])) for n, d in per_method.items()}}


def class_onsets(dice_per_epoch: list[list[float]], labels: list[str], threshold: float = 0.2) -> dict[str, int | None]:
    """{class: first epoch (1-based) whose pseudo-Dice reached ``threshold``, None if never}, from
    nnU-Net's per-epoch ``dice_per_class_or_region`` log. 0.2 [assumption]: well above the noise of an
    untrained model, well below a learned class."""
    onsets = {}
    for i, label in enumerate(labels):
        reached = [epoch for epoch, dice in enumerate(dice_per_epoch, start=1) if dice[i] >= threshold]
        onsets[label] = reached[0] if reached else None
    return onsets


# --- benchmark matrices -------------------------------------------------------------------------

def _group(row: dict) -> tuple[str, int, int]:
    """(arm, labeled, iterations): what a table row of a benchmark aggregates over folds."""
    return row["method"], int(row["labeled"]), int(row.get("iterations") or 0)


def per_fold_means(rows: list[dict], metric: str) -> dict[tuple[str, int, int, int], float]:
    """{(method, labeled, iterations, fold): mean of the metric over that fold's validation cases}."""
    per_fold: dict[tuple, list[float]] = {}
    for r in rows:
        per_fold.setdefault((*_group(r), int(r["fold"])), []).append(float(r.get(metric, np.nan)))
    return {k: float(np.nanmean(v)) for k, v in sorted(per_fold.items())}


def fold_means(rows: list[dict], metric: str) -> dict[tuple[str, int, int], list[float]]:
    """{(method, labeled, iterations): [per-fold mean over that fold's validation cases]} for one metric."""
    result: dict[tuple[str, int, int], list[float]] = {}
    for (*group, _fold), value in per_fold_means(rows, metric).items():
        result.setdefault(tuple(group), []).append(value)
    return result


def paired_fold_differences(rows: list[dict], baseline: str, metric: str = "dice_foreground"
                            ) -> dict[tuple[str, int, int], list[float]]:
    """{(method, labeled, iterations): [fold mean of method - fold mean of baseline]} over the folds
    both ran: the paired comparison, which removes the fold-to-fold spread that both arms share."""
    means = per_fold_means(rows, metric)
    result: dict[tuple[str, int, int], list[float]] = {}
    for (method, labeled, iterations, fold), value in means.items():
        if method != baseline and (baseline, labeled, iterations, fold) in means:
            result.setdefault((method, labeled, iterations), []).append(
                value - means[(baseline, labeled, iterations, fold)])
    return result


def paired_case_differences(rows: list[dict], baseline: str, metric: str = "dice_foreground"
                            ) -> dict[tuple[str, int, int], list[np.ndarray]]:
    """{(method, labeled, iterations): [per-case method - baseline differences of each fold]}, on the
    validation cases both arms predicted."""
    values = {(*_group(r), int(r["fold"]), r["case"]): float(r[metric]) for r in rows}
    by_fold: dict[tuple, dict[int, list[float]]] = {}
    for (method, labeled, iterations, fold, case), value in sorted(values.items()):
        reference = values.get((baseline, labeled, iterations, fold, case))
        if method != baseline and reference is not None:
            by_fold.setdefault((method, labeled, iterations), {}).setdefault(fold, []).append(value - reference)
    return {k: [np.array(v) for _, v in sorted(folds.items())] for k, folds in by_fold.items()}


def _over_folds(values: list[float]) -> str:
    return f"{np.mean(values):.3f} ± {np.std(values):.3f}" if values else "—"


def _p_value(p: float) -> str:
    return "—" if np.isnan(p) else (f"{p:.3f}" if p >= 0.001 else f"{p:.0e}")


def verdict_text(verdict: Verdict) -> str:
    """A statistics.Verdict in the words of the tables, the JSON and the results page: 'better', 'worse, within the
    noise floor (±0.184)', 'no detectable difference', 'no verdict (2 of the 3 folds it needs)'."""
    if not verdict.enough_folds:
        return f"no verdict ({verdict.folds} of the {verdict.folds_needed} folds it needs)"
    if verdict.direction == "none":
        return "no detectable difference"
    if verdict.noise_band is None:
        return verdict.direction
    return (f"{verdict.direction}, {'beyond' if verdict.beyond_noise_floor else 'within'} the noise floor "
            f"(±{verdict.noise_band:.3f})")


def _with_verdict_text(statistics: dict) -> dict:
    """{(arm, labeled, iterations): compare()} as the JSON stores it: keys joined by '|', verdicts in words."""
    return {"|".join(map(str, k)): {**v, "verdict": verdict_text(v["verdict"])} for k, v in statistics.items()}


def _paired_cells(fold_differences: list[float], stats: dict) -> list[str]:
    """The comparison columns of a table row: fold-paired Δ, folds better, per-case Δ [CI], p, verdict."""
    return [_over_folds(fold_differences), f"{sum(d > 0 for d in fold_differences)}/{len(fold_differences)}",
            f"{stats['mean']:+.3f} [{stats['ci_low']:+.3f}, {stats['ci_high']:+.3f}]",
            _p_value(stats["wilcoxon_p"]), verdict_text(stats["verdict"])]


def noise_floors(rows: list[dict]) -> dict[tuple[int, int], list[float]]:
    """{(labeled, iterations): scratch_rerun's per-fold differences to scratch} where it ran on enough folds
    for a verdict: the run-to-run noise floor that both tables' verdicts are weighed against."""
    from nnunet_ssl.benchmark.arms import SCRATCH, SCRATCH_RERUN
    from nnunet_ssl.benchmark.statistics import MIN_FOLDS_FOR_VERDICT
    return {(labeled, iterations): floor
            for (arm, labeled, iterations), floor in paired_fold_differences(rows, SCRATCH).items()
            if arm == SCRATCH_RERUN and len(floor) >= MIN_FOLDS_FOR_VERDICT}


def weigh_against_noise_floor(statistics: dict, floors: dict[tuple[int, int], list[float]]) -> None:
    """Qualifies each better / worse verdict in ``statistics`` ({(arm, labeled, iterations): compare()})
    by what retraining alone moves (statistics.retraining_band) where ``floors`` (``noise_floors``) has the
    same label budget and length; adds the band as ``noise_band``."""
    from nnunet_ssl.benchmark.arms import SCRATCH_RERUN
    from nnunet_ssl.benchmark.statistics import against_noise_floor, retraining_band
    for (arm, labeled, iterations), stats in statistics.items():
        floor = floors.get((labeled, iterations))
        if arm != SCRATCH_RERUN and floor:
            stats["noise_band"] = retraining_band(floor, stats["folds"])
            stats["verdict"] = against_noise_floor(stats["verdict"], stats["mean"], stats["noise_band"])


RESOLVABLE_DIFFERENCES = (0.01, 0.02, 0.05)  # [assumption] Dice differences a user may want told from retraining


def noise_floor_lines(floors: dict[tuple[int, int], list[float]]) -> list[str]:
    """Markdown: per label budget and length in ``floors`` (``noise_floors``), how far retraining moved a
    fold, the band a mean over that many folds must clear, and how many folds would tell
    RESOLVABLE_DIFFERENCES from retraining (statistics.folds_to_resolve; never fewer than a verdict needs)."""
    from nnunet_ssl.benchmark.statistics import (MIN_FOLDS_FOR_VERDICT, folds_to_resolve, retraining_band,
                                                 retraining_spread)
    lines = [f"- M = {labeled}{f', {iterations} iterations' if iterations else ''}: scratch trained again "
             f"moved a fold by up to {max(abs(d) for d in floor):.3f} (s = {retraining_spread(floor):.3f} per "
             f"fold); over {len(floor)} folds a mean difference is told from retraining beyond "
             f"±{retraining_band(floor, len(floor)):.3f}; telling "
             + " / ".join(f"{d:g}" for d in RESOLVABLE_DIFFERENCES) + " would take "
             + " / ".join(str(max(MIN_FOLDS_FOR_VERDICT, folds_to_resolve(floor, d)))
                          for d in RESOLVABLE_DIFFERENCES) + " folds."
             for (labeled, iterations), floor in floors.items()]
    if lines:
        lines = ["", "Noise floor (scratch trained again on the same folds; the verdicts above are weighed "
                 "against it):", ""] + lines
    return lines


def recipe_comparisons(rows: list[dict], baseline: str, floors: dict | None = None) -> tuple[list[str], dict]:
    """What a fine-tuning recipe adds to its own pretraining: each METHOD+RECIPE arm (pcl+meanTeacher)
    against its METHOD arm (pcl, the default recipe) on the same folds and cases. Arms whose plain arm
    is the baseline are left out: the main table already compares them; verdicts are weighed against
    ``floors`` (``noise_floors``). Returns markdown lines and {(arm, labeled, iterations): statistics}."""
    from nnunet_ssl.benchmark.arms import split_arm
    from nnunet_ssl.benchmark.statistics import MIN_FOLDS_FOR_VERDICT, compare
    arms = list(dict.fromkeys(r["method"] for r in rows))
    pairs = [(arm, method) for arm in arms for method, recipe in [split_arm(arm)]
             if recipe and method in arms and method != baseline]
    statistics, fold_differences = {}, {}
    for arm, plain in pairs:
        plain_fold_differences = paired_fold_differences(rows, plain)
        for group, differences in paired_case_differences(rows, plain).items():
            if group[0] == arm:
                statistics[group] = compare(differences, min_folds=MIN_FOLDS_FOR_VERDICT)
                fold_differences[group] = plain, plain_fold_differences[group]
    weigh_against_noise_floor(statistics, floors or {})
    lines = [f"| {group[0]} | {plain} | {group[1]} | {group[2] or '—'} | {statistics[group]['folds']} | "
             + " | ".join(_paired_cells(differences, statistics[group])) + " |"
             for group, (plain, differences) in fold_differences.items()]
    if lines:
        lines = ["", "What each recipe adds to its own pretraining (per case, against the same method fine-tuned "
                 "with the default recipe on the same folds and cases):", "",
                 "| arm | against | labeled | iterations | folds | Δ foreground (fold-paired) | folds better | "
                 "Δ per case [95% CI] | Wilcoxon p | verdict |", "|" + "---|" * 10] + lines
    return lines, statistics


def benchmark_report(rows: list[dict], out_prefix: str, class_names: dict[str, str], baseline: str = "scratch") -> dict:
    """CSV and JSON of every per-case number, a markdown table (mean ± std over folds of each fold's
    mean per-case 3D Dice, per class and foreground; PPV/LTPR/LFPR for binary tasks; with a
    ``baseline`` arm, the fold-paired foreground difference to it and the per-case paired statistics
    of benchmark/statistics.py) and a plot: Dice against training iterations when the benchmark ran
    several lengths (a learning curve), else against the number of labeled cases."""
    import csv

    from nnunet_ssl.benchmark.statistics import MIN_FOLDS_FOR_VERDICT, compare, plateau_length
    methods = list(dict.fromkeys(r["method"] for r in rows))
    groups = sorted({_group(r) for r in rows}, key=lambda g: (methods.index(g[0]), g[1], g[2]))
    iterations = sorted({g[2] for g in groups})
    metrics = ["dice_foreground"] + sorted(k for k in rows[0] if k.startswith("dice_") and k != "dice_foreground")
    metrics += [k for k in ("ppv", "ltpr", "lfpr") if k in rows[0]]
    names = {"dice_foreground": "Dice (foreground)", "ppv": "PPV", "ltpr": "LTPR", "lfpr": "LFPR",
             **{f"dice_{k}": f"Dice {v}" for k, v in class_names.items()}}
    paired = paired_fold_differences(rows, baseline) if baseline in methods and len(methods) > 1 else None
    differences = paired_case_differences(rows, baseline) if paired is not None else {}
    statistics = {g: compare(differences[g], min_folds=MIN_FOLDS_FOR_VERDICT) for g in groups if g in differences}
    floors = noise_floors(rows)
    weigh_against_noise_floor(statistics, floors)
    header = "| method | labeled | iterations | folds | " + " | ".join(names.get(m, m) for m in metrics) + " |"
    if paired is not None:
        header += (f" Δ foreground vs {baseline} (fold-paired) | folds better | Δ per case [95% CI] | "
                   f"Wilcoxon p | verdict |")
    lines = [header, "|" + "---|" * (len(metrics) + 4 + 5 * (paired is not None))]
    aggregated = {m: fold_means(rows, m) for m in metrics}
    for group in groups:
        method, labeled, n_iterations = group
        folds = aggregated["dice_foreground"].get(group, [])
        cells = [_over_folds(aggregated[m].get(group, [])) for m in metrics]
        if paired is not None:
            diffs = paired.get(group, [])
            cells += ["—"] * 5 if method == baseline or not diffs else _paired_cells(diffs, statistics[group])
        lines.append(f"| {method} | {labeled} | {n_iterations or '—'} | {len(folds)} | " + " | ".join(cells) + " |")
    recipe_lines, recipe_statistics = recipe_comparisons(rows, baseline, floors) if paired is not None else ([], {})
    lines += recipe_lines + noise_floor_lines(floors)
    n_cases = len({(r["fold"], r["case"]) for r in rows})
    if len(iterations) > 1:  # a learning curve: where does each arm stop gaining?
        lines += ["", "Plateau (shortest length whose doubling adds < 0.01 mean foreground Dice):"]
        for method, labeled in dict.fromkeys((g[0], g[1]) for g in groups):
            curve = {g[2]: float(np.mean(aggregated["dice_foreground"][g])) for g in groups if g[:2] == (method, labeled)}
            found = plateau_length(curve)
            lines.append(f"- {method}, M = {labeled}: " + (f"{found} iterations" if found else
                                                           "not reached within the measured lengths"))
    markdown = "\n".join(lines) + (
        f"\n\nEach fold's validation cases are untouched by its training; a fold's value is the mean of "
        f"per-case 3D metrics over its validation cases, and the table shows mean ± std over folds "
        f"({n_cases} distinct validation cases in all). Models are the final checkpoints, never selected "
        f"on the reported fold." + (
            f" Δ fold-paired: each fold's difference to {baseline} on the same validation cases, then mean ± "
            f"std over folds. Δ per case: the per-case differences pooled over folds (folds weigh equally), "
            f"with a 95% bootstrap interval that resamples folds, then cases within folds; Wilcoxon: "
            f"two-sided signed-rank test of the pooled per-case differences (cases of one fold share a "
            f"model, so read it as descriptive); verdict: better / worse only when the interval excludes 0, "
            f"and only from {MIN_FOLDS_FOR_VERDICT} folds on (with fewer, the interval hardly reflects "
            f"retraining spread). Where scratch_rerun (scratch trained again) ran on {MIN_FOLDS_FOR_VERDICT} "
            f"or more folds, a better / worse verdict also says whether the mean difference is beyond "
            f"the noise floor: ± t · s / √(folds), with s² the mean square of scratch_rerun's per-fold "
            f"differences to scratch and t the 95% quantile with as many degrees of freedom as its folds "
            f"(what retraining alone moves a mean over that many folds)."
            if paired is not None else "") + (
        f" Differences at a glance: {os.path.basename(out_prefix)}_differences.png (each arm's per-case interval "
        f"against {baseline}, the noise floor shaded)." if statistics else ""))
    with open(out_prefix + ".md", "w") as f:
        f.write(markdown + "\n")
    with open(out_prefix + ".csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    with open(out_prefix + ".json", "w") as f:
        json.dump({"rows": rows, "baseline": baseline, "statistics": _with_verdict_text(statistics),
                   "recipe_statistics": _with_verdict_text(recipe_statistics)}, f, indent=1)
    plot = out_prefix + ".png"
    if len(iterations) > 1:
        plot_learning_curve(aggregated["dice_foreground"], groups, plot)
    else:
        plot_budget_curve(aggregated["dice_foreground"], groups, plot)
    files = [out_prefix + ext for ext in (".md", ".csv", ".json", ".png")]
    if statistics:  # the question a benchmark asks, in one picture: which arm clears 0 and the noise floor?
        plot_differences(statistics, out_prefix + "_differences.png", baseline)
        files.append(out_prefix + "_differences.png")
    return {"markdown": markdown, "files": files,
            "statistics": statistics, "recipe_statistics": recipe_statistics,
            "aggregated": {m: {"|".join(map(str, k)): v for k, v in agg.items()} for m, agg in aggregated.items()}}


def pretraining_table(summaries: list[dict]) -> str:
    """Markdown: how long each method pretrained and where its last epoch's metrics ended."""
    keys = list(dict.fromkeys(k for s in summaries for k in s["final_metrics"]
                              if k not in ("epoch", "lr", "seconds", "samples_per_s")))
    lines = ["| method | steps | batch | minutes | health plateau | " + " | ".join(f"last epoch {k}" for k in keys)
             + " |", "|" + "---|" * (5 + len(keys))]
    for s in summaries:
        values = [s["final_metrics"].get(k) for k in keys]
        lines.append(f"| {s['method']} | {s['steps']} | {s['batch_size']} | {s['minutes']:.1f} | "
                     f"{_plateau_cell(s.get('plateau'))} | "
                     + " | ".join("—" if v is None else f"{v:.4g}" for v in values) + " |")
    from nnunet_ssl.blocks.health import HEALTH_PLATEAU_GAIN, HEALTH_SMOOTHING_EPOCHS
    return "\n".join(lines) + (
        f"\n\nHealth plateau: the epoch from which doubling the pretraining added < {HEALTH_PLATEAU_GAIN} to every "
        f"label-free health curve, and every later doubling too (1 - loss / collapse value, retrieval gain over "
        f"chance, 1 - loss / trivial loss for reconstruction; {HEALTH_SMOOTHING_EPOCHS}-epoch means); \"still "
        "rising\" when the last measured doubling added more: that method may need a longer pretraining.")


def _plateau_cell(plateau: dict | None) -> str:
    if not plateau or not plateau["per_curve"]:
        return "—"
    if plateau.get("too_short"):
        return "too short to tell"
    if plateau["plateau_epoch"] is None:
        return "still rising"
    return f"epoch {plateau['plateau_epoch']} of {plateau['epochs']}"
