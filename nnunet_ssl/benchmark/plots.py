"""The benchmark's and the demo's figures (matplotlib, headless): what report.py and studies.py draw, from
numbers they computed; nothing here computes a statistic."""
import contextlib

import numpy as np


@contextlib.contextmanager
def _saved_axes(path: str, figsize: tuple[float, float]):
    """One matplotlib axes (headless backend), written to ``path`` when the block ends."""
    import matplotlib
    matplotlib.use("agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=figsize)
    try:
        yield ax
        fig.tight_layout()
        fig.savefig(path, dpi=110)
    finally:
        plt.close(fig)


def plot_paired_cases(per_method: dict, cases: list[str], baseline: str, path: str) -> None:
    names = list(per_method)
    data = [[per_method[n][c]["foreground"] for c in cases] for n in names]
    with _saved_axes(path, (2.2 + 1.6 * len(names), 4.5)) as ax:
        for i in range(len(cases)):
            ax.plot(range(len(names)), [d[i] for d in data], color="grey", alpha=0.25, lw=0.8)
        ax.boxplot(data, positions=range(len(names)), widths=0.45, showmeans=True)
        ax.set_xticks(range(len(names)), names)
        ax.set_ylabel("per-case foreground Dice (3D)")
        ax.set_title(f"{len(cases)} evaluation cases; lines pair the same case")
        ax.grid(axis="y", alpha=0.3)


def _errorbar_plot(fold_values: dict, series: dict[str, list[tuple]], x_of, xlabel: str, path: str,
                   log_x: bool = False) -> None:
    with _saved_axes(path, (6.4, 4.4)) as ax:
        xticks = sorted({x_of(g) for groups in series.values() for g in groups})
        for label, groups in series.items():
            ax.errorbar([x_of(g) for g in groups], [np.mean(fold_values[g]) for g in groups],
                        yerr=[np.std(fold_values[g]) for g in groups], marker="o", capsize=4, label=label)
        if log_x:
            ax.set_xscale("log")
        ax.set_xticks(xticks, [str(x) for x in xticks])
        ax.minorticks_off()
        ax.set_xlabel(xlabel)
        ax.set_ylabel("foreground Dice (mean ± std over folds)")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)


def plot_budget_curve(fold_values: dict, groups: list[tuple], path: str) -> None:
    series: dict[str, list[tuple]] = {}
    for g in groups:
        series.setdefault(g[0], []).append(g)
    _errorbar_plot(fold_values, series, lambda g: g[1], "labeled training cases", path)


def plot_learning_curve(fold_values: dict, groups: list[tuple], path: str) -> None:
    series: dict[str, list[tuple]] = {}
    several_budgets = len({g[1] for g in groups}) > 1
    for g in groups:
        series.setdefault(f"{g[0]}, M = {g[1]}" if several_budgets else g[0], []).append(g)
    _errorbar_plot(fold_values, series, lambda g: g[2], "fine-tuning iterations", path, log_x=True)


def difference_rows(statistics: dict[tuple[str, int, int], dict]) -> list[dict]:
    """The rows of the differences plot, grouped by label budget and length (ascending), arms in the order given:
    label, mean and interval of the per-case difference, the noise band (0 where unmeasured) and the verdict's
    reading: 'better' / 'worse' only when the interval excludes 0 and the mean lies beyond the noise band where
    one was measured (statistics.Verdict.finding), else 'none'."""
    rows = []
    for (arm, labeled, iterations), stats in sorted(statistics.items(), key=lambda kv: kv[0][1:]):
        rows.append({"label": f"{arm}, M = {labeled}" + (f", {iterations} it" if iterations else ""),
                     "group": (labeled, iterations), "mean": stats["mean"], "low": stats["ci_low"],
                     "high": stats["ci_high"], "band": stats.get("noise_band", 0.0),
                     "finding": stats["verdict"].finding})
    return rows


def plot_differences(statistics: dict[tuple[str, int, int], dict], path: str, baseline: str = "scratch") -> None:
    """Forest plot of ``statistics`` (benchmark_report's): each arm's per-case difference to the baseline
    with its 95% interval, one row per arm, label budget and length; the grey band around 0 is the noise
    floor of that budget and length (what retraining scratch alone moves a mean), where it was measured."""
    from matplotlib.ticker import MaxNLocator
    rows = difference_rows(statistics)
    colours = {"better": "tab:green", "worse": "tab:red", "none": "black"}
    with _saved_axes(path, (7.2, 1.6 + 0.34 * len(rows))) as ax:
        for y, row in enumerate(rows):
            if row["band"]:
                ax.fill_betweenx([y - 0.5, y + 0.5], -row["band"], row["band"], color="0.85", lw=0)
            ax.plot([row["low"], row["high"]], [y, y], color=colours[row["finding"]], lw=2)
            ax.plot(row["mean"], y, "o", color=colours[row["finding"]])
        for y in range(1, len(rows)):  # a rule between label budgets / lengths
            if rows[y]["group"] != rows[y - 1]["group"]:
                ax.axhline(y - 0.5, color="0.5", lw=0.6)
        ax.axvline(0, color="0.3", lw=0.8, ls="--")
        ax.set_yticks(range(len(rows)), [row["label"] for row in rows], fontsize=8)
        ax.set_ylim(len(rows) - 0.5, -0.5)
        ax.set_xlabel(f"foreground Dice - {baseline}, per case (mean, 95% CI)")
        ax.xaxis.set_major_locator(MaxNLocator(7))
        ax.set_title("grey: noise floor (scratch trained again)\n"
                     "colour: interval excludes 0, mean beyond the floor", fontsize=8)
        ax.grid(axis="x", alpha=0.3)


def mean_training_curve(curves: list[list[float]]) -> np.ndarray:
    """Epoch-wise mean over folds; a fold cut short is averaged only over the epochs all folds have."""
    shortest = min(len(c) for c in curves)
    return np.mean([c[:shortest] for c in curves], axis=0)


def plot_training_curves(curves: dict[tuple[str, int, int], list[list[float]]], path: str) -> None:
    """Pseudo-Dice during fine-tuning against iterations: each fold thin, the mean over folds bold. Shown
    to see when each arm learns; never used to select a model (the reported Dice is checkpoint_final's)."""
    with _saved_axes(path, (7.2, 4.4)) as ax:
        for (arm, labeled, iterations), folds in curves.items():
            mean = mean_training_curve(folds)
            x = np.arange(1, len(mean) + 1) * iterations / max(len(c) for c in folds)
            folds_said = f"{len(folds)} fold" + "s" * (len(folds) > 1)
            line, = ax.plot(x, mean, lw=2, label=f"{arm}, M = {labeled}, {iterations} it ({folds_said})")
            for fold in folds:
                ax.plot(x[:len(fold)], fold[:len(x)], lw=0.6, alpha=0.35, color=line.get_color())
        ax.set_xlabel("fine-tuning iterations")
        ax.set_ylabel("pseudo-Dice on validation batches (EMA)")
        ax.set_ylim(0, 1)
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
