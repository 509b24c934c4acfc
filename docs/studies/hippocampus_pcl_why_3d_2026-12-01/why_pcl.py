"""Combine the benchmark CSVs of the 2026-12-01 PCL follow-up into one table and one plot.

Usage (after the commands in notes.md):
    python docs/studies/hippocampus_pcl_why_3d_2026-12-01/why_pcl.py OUT_PREFIX ARM=CSV[:METHOD] ...
Each ARM=CSV[:METHOD] takes the rows of METHOD (default: ARM) from a benchmark.csv and names them ARM.
Writes OUT_PREFIX.md/.csv/.json (nnunet_ssl's benchmark table, with the fold-paired difference to
the arm called scratch) and OUT_PREFIX_classes.png: per fold, anterior against posterior Dice.
"""
import csv
import os
import sys

import numpy as np

from nnunet_ssl.benchmark.report import per_fold_means, benchmark_report


def load(spec: str) -> list[dict]:
    if "=" not in spec:
        raise SystemExit(f"{spec!r}: expected ARM=CSV[:METHOD], e.g. scratch=out/benchmark.csv")
    arm, source = spec.split("=", 1)
    path, _, method = source.partition(":")
    if not os.path.isfile(path):
        raise SystemExit(f"{spec}: no file {path!r}; give a benchmark.csv written by nnUNetv2_ssl_benchmark")
    rows = []
    with open(path) as f:
        for r in csv.DictReader(f):
            if r["method"] != (method or arm):
                continue
            row = {k: (v if k in ("method", "trainer", "case") else float(v)) for k, v in r.items()}
            row.update(method=arm, labeled=int(row["labeled"]), fold=int(row["fold"]), base_fold=int(row["base_fold"]))
            rows.append(row)
    if not rows:
        raise SystemExit(f"no rows for {spec}")
    return rows


def class_plot(rows: list[dict], path: str) -> None:
    import matplotlib
    matplotlib.use("agg")
    import matplotlib.pyplot as plt

    anterior, posterior = per_fold_means(rows, "dice_1"), per_fold_means(rows, "dice_2")
    arms = list(dict.fromkeys(r["method"] for r in rows))
    fig, ax = plt.subplots(figsize=(6, 5))
    for i, arm in enumerate(arms):
        keys = [k for k in anterior if k[0] == arm]
        ax.scatter([anterior[k] for k in keys], [posterior[k] for k in keys], label=arm, s=45,
                   marker="osD^vP*X"[i % 8], alpha=0.8)
    ax.plot([0, 1], [0, 1], color="grey", lw=0.6, ls=":")
    ax.set_xlim(-0.03, 0.8), ax.set_ylim(-0.03, 0.8)
    ax.set_xlabel("Dice anterior (fold mean)")
    ax.set_ylabel("Dice posterior (fold mean)")
    ax.set_title("each point: one fine-tuned model (fold)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    if len(sys.argv) < 3:
        raise SystemExit(__doc__)
    out_prefix, specs = sys.argv[1], sys.argv[2:]
    rows = [r for spec in specs for r in load(spec)]
    report = benchmark_report(rows, out_prefix, {"1": "Anterior", "2": "Posterior"})
    class_plot(rows, out_prefix + "_classes.png")
    both = {arm: [] for arm in dict.fromkeys(r["method"] for r in rows)}
    anterior, posterior = per_fold_means(rows, "dice_1"), per_fold_means(rows, "dice_2")
    for key in anterior:
        both[key[0]].append(min(anterior[key], posterior[key]) > 0.2)
    print(report["markdown"])
    print("\nfolds where both classes reach fold-mean Dice > 0.2:",
          {arm: f"{int(np.sum(v))}/{len(v)}" for arm, v in both.items()})
