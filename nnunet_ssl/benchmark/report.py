"""Per-case 3D Dice from nnU-Net's validation summaries: tables, a plot and raw numbers."""
import json

import numpy as np


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


def paired_dice_report(summaries: dict[str, str], baseline: str, out_prefix: str,
                       class_names: dict[str, str] | None = None) -> dict:
    """Markdown table (mean ± std over cases, per class and foreground), paired difference to the
    baseline, a box/paired-line plot and a JSON of every per-case number."""
    per_method = {name: per_case_dice(path) for name, path in summaries.items()}
    cases = sorted(set.intersection(*(set(d) for d in per_method.values())))
    columns = [k for k in next(iter(per_method.values()))[cases[0]] if k != "foreground"] + ["foreground"]
    names = class_names or {}
    header = "| method | " + " | ".join(f"Dice {names.get(c, 'class ' + c if c != 'foreground' else c)}"
                                        for c in columns) + f" | Δ foreground vs {baseline} | cases better |"
    lines = [header, "|" + "---|" * (len(columns) + 3)]
    base = np.array([per_method[baseline][c]["foreground"] for c in cases])
    for name, dice in per_method.items():
        cells = [_mean_std([dice[c][col] for c in cases]) for col in columns]
        fg = np.array([dice[c]["foreground"] for c in cases])
        diff = "—" if name == baseline else _mean_std(fg - base)
        wins = "—" if name == baseline else f"{int((fg > base).sum())}/{len(cases)}"
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {diff} | {wins} |")
    markdown = "\n".join(lines) + f"\n\nPer-case 3D Dice on {len(cases)} evaluation cases (mean ± std over cases)."
    with open(out_prefix + ".md", "w") as f:
        f.write(markdown + "\n")
    with open(out_prefix + ".json", "w") as f:
        json.dump({"summaries": summaries, "per_case": per_method}, f, indent=1)
    plot = out_prefix + ".png"
    _plot(per_method, cases, baseline, plot)
    return {"markdown": markdown, "markdown_file": out_prefix + ".md", "json": out_prefix + ".json", "plot": plot,
            "mean_foreground": {n: float(np.mean([d[c]["foreground"] for c in cases])) for n, d in per_method.items()}}


def _plot(per_method: dict, cases: list[str], baseline: str, path: str) -> None:
    import matplotlib
    matplotlib.use("agg")
    import matplotlib.pyplot as plt

    names = list(per_method)
    data = [[per_method[n][c]["foreground"] for c in cases] for n in names]
    fig, ax = plt.subplots(figsize=(2.2 + 1.6 * len(names), 4.5))
    for i in range(len(cases)):
        ax.plot(range(len(names)), [d[i] for d in data], color="grey", alpha=0.25, lw=0.8)
    ax.boxplot(data, positions=range(len(names)), widths=0.45, showmeans=True)
    ax.set_xticks(range(len(names)), names)
    ax.set_ylabel("per-case foreground Dice (3D)")
    ax.set_title(f"{len(cases)} evaluation cases; lines pair the same case")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
