"""nnUNetv2_ssl_export: make a fine-tuned model usable by stock nnU-Net, without this plugin.

Our trainers change how training starts (weights, schedule), not the network nnU-Net builds, so a
model folder is valid for ``nnUNetTrainer`` once the checkpoints name it. The export copies the
model folder under ``nnUNetTrainer__<plans>__<configuration>`` in another results folder, rewrites
``trainer_name`` and records where the model came from in ``nnunet_ssl_provenance.json``.
"""
import argparse
import os
import shutil
from os.path import isdir, isfile, join

from nnunet_ssl.atomic_io import atomic_save_json, atomic_torch_save
from nnunet_ssl.cli import run_cli
from nnunet_ssl.errors import SSLUserError

COPIED = ("plans.json", "dataset.json", "dataset_fingerprint.json")
FOLD_FILES = ("checkpoint_final.pth", "progress.png", "debug.json", os.path.join("validation", "summary.json"))


def export(dataset: str, configuration: str, trainer: str, plans: str, output_results: str,
           folds: list[str] | None = None) -> str:
    import torch
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    import nnunet_ssl.integration.trainers as trainers
    from nnunet_ssl.integration.dataset import resolve_dataset_name
    from nnunet_ssl.integration.locations import results_root

    trainer_class = trainers.TRAINERS.get(trainer)
    if trainer_class is None:
        raise SSLUserError(f"{trainer!r} is not an nnunet-ssl trainer.", f"use one of {sorted(trainers.TRAINERS)}")
    if trainer_class.build_network_architecture is not nnUNetTrainer.build_network_architecture:
        raise SSLUserError(f"{trainer} builds its own network; stock nnUNetTrainer could not load it.")
    name = resolve_dataset_name(dataset)
    source = join(results_root("the export (it copies from there)"), name, f"{trainer}__{plans}__{configuration}")
    if not isdir(source):
        raise SSLUserError(f"no trained model at {source}.",
                           f"nnUNetv2_train {dataset} {configuration} FOLD -p {plans} -tr {trainer}")
    folds = folds or sorted(d[5:] for d in os.listdir(source) if d.startswith("fold_")
                            and isfile(join(source, d, "checkpoint_final.pth")))
    missing = [f for f in folds if not isfile(join(source, f"fold_{f}", "checkpoint_final.pth"))]
    if not folds or missing:
        raise SSLUserError(f"no finished training (checkpoint_final.pth) for fold(s) {missing or 'any'} in {source}.",
                           "finish training first, or pass -f with finished folds")
    target = join(output_results, name, f"nnUNetTrainer__{plans}__{configuration}")
    if os.path.exists(target):
        raise SSLUserError(f"{target} exists; nothing was overwritten.", "choose another -o, or move it away")
    for file in COPIED:
        if isfile(join(source, file)):
            os.makedirs(target, exist_ok=True)
            shutil.copy2(join(source, file), join(target, file))
    for fold in folds:
        for file in FOLD_FILES:
            src, dst = join(source, f"fold_{fold}", file), join(target, f"fold_{fold}", file)
            if not isfile(src):
                continue
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            if file == "checkpoint_final.pth":
                checkpoint = torch.load(src, map_location="cpu", weights_only=False)
                checkpoint["trainer_name"] = "nnUNetTrainer"
                atomic_torch_save(checkpoint, dst)
            else:
                shutil.copy2(src, dst)
    atomic_save_json({"exported_from": source, "original_trainer": trainer, "folds": folds,
                      "note": "weights unchanged; trainer_name rewritten to nnUNetTrainer"},
                     join(target, "nnunet_ssl_provenance.json"))
    print(f"exported {len(folds)} fold(s) to {target}\npredict with stock nnU-Net (no plugin needed):\n"
          f"  nnUNet_results={output_results} nnUNetv2_predict -i IN -o OUT -d {dataset} -c {configuration} "
          f"-p {plans} -tr nnUNetTrainer -f {' '.join(folds)}")
    return target


def export_entry() -> None:
    parser = argparse.ArgumentParser(prog="nnUNetv2_ssl_export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-d", dest="dataset", required=True)
    parser.add_argument("-c", dest="configuration", default="3d_fullres")
    parser.add_argument("-tr", dest="trainer", default="SSLInitTrainer")
    parser.add_argument("-p", dest="plans", default="nnUNetPlans")
    parser.add_argument("-f", dest="folds", nargs="+", help="folds to export (default: every finished fold)")
    parser.add_argument("-o", dest="output", required=True, help="results folder to export into (an nnUNet_results)")
    args = parser.parse_args()
    run_cli(lambda: export(args.dataset, args.configuration, args.trainer, args.plans, args.output, args.folds))
