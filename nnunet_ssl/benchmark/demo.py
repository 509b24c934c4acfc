"""nnUNetv2_ssl_demo: the whole product path on bundled real data, on a CPU, in minutes.

Raw dataset from the bundled MSD hippocampus subset -> nnU-Net planning and preprocessing ->
CPU plans -> pretraining (the protocol's recipe names the method) -> fine-tuning from scratch and from
the pretrained weights with one schedule, through
stock nnUNetv2_train -> per-case 3D Dice table and plot on the cases neither run trained on, beside the spread of
recorded runs of the same setting and the multi-fold result for the arm it ran (one run gives no verdict).
Every step is a real nnU-Net or nnunet-ssl command; finished steps are skipped on a re-run.
"""
import json
import os
import shutil
import time
from dataclasses import dataclass
from importlib import resources

from nnunet_ssl.errors import SSLUserError

DEFAULT_WORKDIR = os.path.join(os.path.expanduser("~"), "nnunet_ssl_demo")
NNUNET_VARS = ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")
FRESH_WORKDIR_FIX = "run the demo with --workdir pointing to a fresh folder"


def load_protocol(name: str = "demo_hippocampus") -> dict:
    return json.loads((resources.files("nnunet_ssl.recipes") / "protocols" / f"{name}.json").read_text())


def demo_folders(workdir: str | None) -> dict[str, str]:
    """The nnU-Net folders when all three are set (and no --workdir), else <workdir>/nnUNet_*."""
    if workdir is None and all(os.environ.get(v) for v in NNUNET_VARS):
        return {v: os.environ[v] for v in NNUNET_VARS}
    root = os.path.abspath(workdir or DEFAULT_WORKDIR)
    return {v: os.path.join(root, v) for v in NNUNET_VARS}


@dataclass(frozen=True)
class DemoSpec:
    """Every option of one demo run (the command's options, by the same names)."""
    workdir: str | None = None  # None: the nnUNet_* folders when all three are set, else DEFAULT_WORKDIR
    device: str = "cpu"

    def folders(self) -> dict[str, str]:
        return demo_folders(self.workdir)

    def check(self) -> None:
        """Everything before the first write: the device, every folder the demo writes to is a folder (or not there
        yet), and nnUNet_raw holds the demo's dataset or none with its id."""
        from nnunet_ssl.integration.device import check_device
        check_device(self.device)
        folders = self.folders()
        for path in (self.workdir, *folders.values()):
            if path is not None and os.path.exists(path) and not os.path.isdir(path):
                raise SSLUserError(f"{path} is a file, not a folder; nothing was written.",
                                   "pass --workdir a folder (new or the demo's own), or move that file away")
        raw_dataset_written(folders["nnUNet_raw"], load_protocol())


def _assets():
    return resources.files("nnunet_ssl") / "assets" / "hippocampus"


def _bundled_cases() -> list[str]:
    return sorted(p.name[: -len(".nii.gz")] for p in (_assets() / "imagesTr").iterdir() if p.name.endswith(".nii.gz"))


def _raw_dataset_json(n_cases: int) -> dict:
    return {"channel_names": {"0": "MRI"}, "labels": {"background": 0, "Anterior": 1, "Posterior": 2},
            "numTraining": n_cases, "file_ending": ".nii.gz",
            "reference": "MSD Task04 Hippocampus (CC BY-SA 4.0), via nnunet-ssl's bundled subset",
            "licence": "CC BY-SA 4.0"}


def raw_dataset_written(raw_root: str, protocol: dict) -> bool:
    """Whether nnUNet_raw already holds the demo's dataset (False: nothing there with its name or id); another
    dataset in its folder or under its id is refused. Reads only."""
    folder = os.path.join(raw_root, protocol["dataset_name"])
    json_path = os.path.join(folder, "dataset.json")
    if os.path.isdir(folder):
        if not os.path.isfile(json_path) or json.load(open(json_path)) != _raw_dataset_json(len(_bundled_cases())):
            raise SSLUserError(f"{folder} exists and is not the demo's dataset; nothing was changed.",
                               FRESH_WORKDIR_FIX)
        return True
    other = [d for d in os.listdir(raw_root) if d.startswith(f"Dataset{protocol['dataset_id']:03d}_")] \
        if os.path.isdir(raw_root) else []
    if other:
        raise SSLUserError(f"dataset id {protocol['dataset_id']} is taken by {other[0]} in {raw_root}.",
                           FRESH_WORKDIR_FIX)
    return False


def write_raw_dataset(raw_root: str, protocol: dict) -> list[str]:
    """Copy the bundled cases into nnUNet_raw in nnU-Net's format; refuse to touch a different dataset."""
    cases = _bundled_cases()
    if raw_dataset_written(raw_root, protocol):
        return cases
    assets = _assets()
    folder = os.path.join(raw_root, protocol["dataset_name"])
    tmp = folder + ".partial"
    shutil.rmtree(tmp, ignore_errors=True)
    for sub, suffix in (("imagesTr", "_0000"), ("labelsTr", "")):
        os.makedirs(os.path.join(tmp, sub))
        for case in cases:
            with (assets / sub / f"{case}.nii.gz").open("rb") as src, \
                    open(os.path.join(tmp, sub, f"{case}{suffix}.nii.gz"), "wb") as dst:
                shutil.copyfileobj(src, dst)
    with open(os.path.join(tmp, "dataset.json"), "w") as f:
        json.dump(_raw_dataset_json(len(cases)), f, indent=1)
    os.replace(tmp, folder)
    return cases


def write_demo_split(preprocessed_root: str, protocol: dict, cases: list[str]) -> dict:
    """Fold 0 = seeded, disjoint sets of labeled (training) and evaluation cases; the remaining
    cases serve only as unlabeled pretraining data."""
    import numpy as np
    n_labeled, n_eval = protocol["labeled_cases"], protocol["evaluation_cases"]
    order = np.random.default_rng(protocol["split_seed"]).permutation(cases).tolist()
    split = {"train": sorted(order[:n_labeled]), "val": sorted(order[n_labeled:n_labeled + n_eval])}
    from nnunet_ssl.integration.splits import write_single_fold
    return write_single_fold(preprocessed_root, protocol["dataset_name"], split)


def run_demo(spec: DemoSpec) -> dict:
    """Run the demo of ``spec`` (every check first: a refused demo writes nothing); returns its paired report."""
    from nnunet_ssl.benchmark.report import paired_dice_report
    from nnunet_ssl.benchmark.run import cell_environment, class_onsets_of_training
    from nnunet_ssl.benchmark.steps import StepRunner
    from nnunet_ssl.benchmark.studies import demo_closing_lines, difference_range, load_evidence, same_setting_runs
    from nnunet_ssl.integration.device import cpu_worker_env, shared_cores_env
    from nnunet_ssl.integration.locations import FINAL, PREFIX, model_folder
    from nnunet_ssl.integration.trainers.registry import trainer_class
    from nnunet_ssl.methods.recipes import load_recipe

    spec.check()  # before any folder is made or planning starts
    device = spec.device
    protocol = load_protocol()
    folders = spec.folders()
    for path in folders.values():
        os.makedirs(path, exist_ok=True)
    environ, removed = cell_environment(os.environ)  # the demo's arms load the pretraining it makes, nothing else
    if removed:
        print(f"note: {' and '.join(removed)} set in this shell: not passed to the demo's commands")
    env = {**environ, **folders}
    cpu_env = cpu_worker_env(device)  # for training steps only, not for planning
    work = os.path.dirname(folders["nnUNet_results"])
    ds_id, ds_name, plans, cfg = (str(protocol["dataset_id"]), protocol["dataset_name"], protocol["plans"],
                                  protocol["configuration"])
    results = os.path.join(folders["nnUNet_results"], ds_name)
    print(f"nnunet-ssl demo: working in {work} (nnU-Net folders {', '.join(folders.values())})")
    start = time.time()
    steps = StepRunner(env, os.path.join(results, "demo_logs"), total_steps=6)

    cases = write_raw_dataset(folders["nnUNet_raw"], protocol)
    steps.done(f"raw dataset {ds_name}: {len(cases)} bundled cases (MSD Hippocampus, CC BY-SA 4.0)")
    steps.run("plan_and_preprocess", ["nnUNetv2_plan_and_preprocess", "-d", ds_id, "-c", cfg, "-np", "2"],
              skip_if=os.path.join(folders["nnUNet_preprocessed"], ds_name, "nnUNetPlans.json"))
    steps.run("plan_cpu", ["nnUNetv2_ssl_plan_cpu", "-d", ds_id])
    split = write_demo_split(folders["nnUNet_preprocessed"], protocol, cases)
    print(f"       fold 0: {len(split['train'])} labeled training cases {split['train']}, "
          f"{len(split['val'])} evaluation cases")
    method = load_recipe(protocol["pretraining_recipe"])["method"]
    steps.run(f"pretrain_{method}", ["nnUNetv2_ssl_pretrain", "-d", ds_id, "-c", cfg, "-p", plans, "-m", method,
                                     "-device", device, "--recipe", protocol["pretraining_recipe"]],
              skip_if=os.path.join(model_folder(ds_name, PREFIX + method, plans, cfg, folders["nnUNet_results"]),
                                   FINAL),
              progress=r"epoch \d+, loss", env=cpu_env)
    summaries = {label: os.path.join(model_folder(ds_name, trainer, plans, cfg, folders["nnUNet_results"]),
                                     "fold_0", "validation", "summary.json")
                 for label, trainer in protocol["trainers"].items()}
    # the arms train at the same time, one thread each on a CPU (one thread per process scales best, cpu_sharing
    # benchmark): on 2 cores both took 599 s side by side (2026-12-04), against 948 s one after the other (12-01)
    steps.run_together([(f"finetune_{label}", ["nnUNetv2_train", ds_id, cfg, "0", "-p", plans, "-tr", trainer,
                                               "-device", device], summaries[label])
                        for label, trainer in protocol["trainers"].items()],
                       progress=r"Epoch \d+$", env={**cpu_env, **shared_cores_env(device, len(summaries))})
    labels = json.load(open(os.path.join(folders["nnUNet_raw"], ds_name, "dataset.json")))["labels"]
    foreground = [str(v) for v in sorted(v for v in labels.values() if v > 0)]
    onsets = {label: class_onsets_of_training(os.path.dirname(os.path.dirname(summary)), foreground)
              for label, summary in summaries.items()}
    classes = [trainer_class(name) for name in protocol["trainers"].values()]
    iterations = sorted({c.NUM_EPOCHS * c.ITERATIONS_PER_EPOCH for c in classes})
    note = (f"The arms trained {', '.join(map(str, iterations))} iterations; from scratch, hippocampus fine-tuning "
            f"plateaus at {protocol['plateau_iterations']} ({protocol['plateau_evidence']}), so both "
            "are short of their final Dice and their classes may still trade places.")
    evidence_data = load_evidence()
    report = paired_dice_report(summaries, baseline="scratch", out_prefix=os.path.join(results, "demo_result"),
                                class_names={str(v): k for k, v in labels.items()}, onsets=onsets, note=note,
                                run_to_run=difference_range(same_setting_runs(evidence_data["demo_runs"], protocol)))
    print("\n" + report["markdown"])
    print(f"\nplot: {report['plot']}\ntable: {report['markdown_file']}\nper-case numbers: {report['json']}")
    print(f"total time {(time.time() - start) / 60:.1f} min")
    print("\n" + "\n\n".join(demo_closing_lines(evidence_data, protocol)))
    return report
