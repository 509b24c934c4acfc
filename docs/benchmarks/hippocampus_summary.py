"""The README's summary figure: every 3-fold arm on hippocampus against matched scratch, per label budget.

Reads the statistics the benchmark reports wrote next to this file (per-case difference to scratch, 95% CI,
noise band) and draws them with the benchmark's own differences plot. Reports written before the noise floor
existed get the band measured at their label budget and length, and their verdict weighed against it the
way the benchmark does today. Run from the repository root:

    python docs/benchmarks/hippocampus_summary.py
"""
import json
from os.path import dirname, join

from nnunet_ssl.benchmark.report import plot_differences
from nnunet_ssl.benchmark.run import SCRATCH_RERUN
from nnunet_ssl.benchmark.statistics import against_noise_floor

HERE = dirname(__file__)
# (report, its arm|labeled|iterations, label in the figure); 3d unless the label says 2d
ARMS = [
    ("hippocampus_M2_2026-12-05", "nnunet|2|4000", "stock nnU-Net"),
    ("hippocampus_M2_2026-12-05", "scratch_rerun|2|4000", "scratch trained again"),
    ("hippocampus_M2_2026-12-05", "mae|2|4000", "MAE, encoder"),
    ("hippocampus_M2_2026-12-05", "models_genesis|2|4000", "Models Genesis"),
    ("hippocampus_mean_teacher_M2_2026-12-06", "scratch+meanTeacher|2|4000", "mean teacher"),
    ("hippocampus_pcl2d_M2_2026-12-06", "scratch_rerun|2|16000", "2d scratch trained again"),
    ("hippocampus_pcl2d_M2_2026-12-06", "pcl|2|16000", "PCL 2d (vs 2d scratch)"),
    ("hippocampus_mlsscl_M5_2026-12-06", "scratch_rerun|5|4000", "scratch trained again"),
    ("hippocampus_plateau_M5_2026-12-04", "pcl|5|4000", "PCL"),
    ("hippocampus_mlsscl_M5_2026-12-06", "mlsscl|5|4000", "MLSSCL"),
    ("hippocampus_mae_encoder_M5_2026-12-04", "mae|5|4000", "MAE, encoder"),
    ("hippocampus_plateau_M5_2026-12-04", "mae+fullNetwork|5|4000", "MAE, whole network"),
    ("hippocampus_mae_480ep_M5_2026-12-05", "mae|5|4000", "MAE pretrained 4x longer"),
    ("hippocampus_genesis_moco_M5_2026-12-05", "models_genesis|5|4000", "Models Genesis"),
    ("hippocampus_genesis_moco_M5_2026-12-05", "moco|5|4000", "MoCo v2"),
    ("hippocampus_byol_M5_2026-12-05", "byol|5|4000", "BYOL"),
    ("hippocampus_mean_teacher_M5_2026-12-04", "scratch+meanTeacher|5|4000", "mean teacher"),
    ("hippocampus_mean_teacher_M5_2026-12-04", "pcl+meanTeacher|5|4000", "PCL + mean teacher"),
    ("hippocampus_mae_mean_teacher_M5_2026-12-06", "mae+meanTeacher|5|4000", "MAE + mean teacher"),
    ("hippocampus_pcl2d_plateau_M5_2026-12-06", "scratch_rerun|5|16000", "2d scratch trained again"),
    ("hippocampus_pcl2d_plateau_M5_2026-12-06", "nnunet|5|16000", "stock nnU-Net 2d (vs 2d scratch)"),
    ("hippocampus_pcl2d_plateau_M5_2026-12-06", "pcl|5|16000", "PCL 2d (vs 2d scratch)"),
    ("hippocampus_M10_2026-12-05", "nnunet|10|4000", "stock nnU-Net"),
    ("hippocampus_M10_2026-12-05", "scratch_rerun|10|4000", "scratch trained again"),
    ("hippocampus_M10_2026-12-05", "mae|10|4000", "MAE, encoder"),
    ("hippocampus_M10_2026-12-05", "models_genesis|10|4000", "Models Genesis"),
    ("hippocampus_mean_teacher_M10_2026-12-06", "scratch+meanTeacher|10|4000", "mean teacher"),
    ("hippocampus_pcl2d_M10_2026-12-06", "scratch_rerun|10|16000", "2d scratch trained again"),
    ("hippocampus_pcl2d_M10_2026-12-06", "pcl|10|16000", "PCL 2d (vs 2d scratch)"),
]


def main() -> None:
    statistics, reruns = {}, set()
    for report, key, label in ARMS:
        with open(join(HERE, report + ".json")) as f:
            stats = json.load(f)["statistics"][key]
        arm, labeled, iterations = key.split("|")
        statistics[(label, int(labeled), int(iterations))] = stats
        if arm == SCRATCH_RERUN:  # the noise floor itself: never weighed against it
            reruns.add(label)
    bands = {group[1:]: s["noise_band"] for group, s in statistics.items() if "noise_band" in s}
    for (label, *group), stats in statistics.items():
        if "noise_band" not in stats and tuple(group) in bands and label not in reruns:
            stats["noise_band"] = bands[tuple(group)]
            stats["verdict"] = against_noise_floor(stats["verdict"], stats["mean"], stats["noise_band"])
    plot_differences(statistics, join(HERE, "hippocampus_summary.png"))


if __name__ == "__main__":
    main()
