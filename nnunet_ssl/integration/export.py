"""Export a fine-tuned model so that stock nnU-Net uses it without this plugin (nnUNetv2_ssl_export).

Our trainers change how training starts (weights, schedule), not the network nnU-Net builds, so a
model folder is valid for ``nnUNetTrainer`` once the checkpoints name it. The export copies the
model folder under ``nnUNetTrainer__<plans>__<configuration>`` in another results folder, rewrites
``trainer_name`` and records where the model came from in ``nnunet_ssl_provenance.json``.
"""
import os
import shutil
from os.path import isdir, isfile, join

from nnunet_ssl.atomic_io import atomic_save_json, atomic_torch_save
from nnunet_ssl.errors import SSLUserError

COPIED = ("plans.json", "dataset.json", "dataset_fingerprint.json")
FOLD_FILES = ("checkpoint_final.pth", "progress.png", "debug.json", os.path.join("validation", "summary.json"))
STOCK_TRAINER = "nnUNetTrainer"


def rewrite_checkpoint(source: str, target: str) -> None:
    """Copy an nnU-Net checkpoint with ``trainer_name`` set to stock nnUNetTrainer (weights unchanged)."""
    import torch
    checkpoint = torch.load(source, map_location="cpu", weights_only=False)
    checkpoint["trainer_name"] = STOCK_TRAINER
    checkpoint.pop("nnunet_ssl_mean_teacher", None)  # a mean teacher's student: only --c needs it
    atomic_torch_save(checkpoint, target)


def export(dataset: str, configuration: str, trainer: str, plans: str, output_results: str,
           folds: list[str] | None = None) -> str:
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    from nnunet_ssl.integration.trainers import trainer_class as find_trainer
    from nnunet_ssl.integration.dataset import resolve_dataset_name
    from nnunet_ssl.integration.locations import model_folder

    trainer_class = find_trainer(trainer)
    if trainer_class is None:
        raise SSLUserError(f"{trainer!r} is not an nnunet-ssl trainer.",
                           "use the -tr name you trained with, e.g. SSLInitTrainer or SSLInitTrainer_pcl_cpu2000it")
    if trainer_class.build_network_architecture is not nnUNetTrainer.build_network_architecture:
        raise SSLUserError(f"{trainer} builds its own network; stock nnUNetTrainer could not load it.")
    name = resolve_dataset_name(dataset)
    source = model_folder(name, trainer, plans, configuration)
    if not isdir(source):
        raise SSLUserError(f"no trained model at {source}.",
                           f"nnUNetv2_train {dataset} {configuration} FOLD -p {plans} -tr {trainer}")
    folds = folds or sorted(d[5:] for d in os.listdir(source) if d.startswith("fold_")
                            and isfile(join(source, d, "checkpoint_final.pth")))
    missing = [f for f in folds if not isfile(join(source, f"fold_{f}", "checkpoint_final.pth"))]
    if not folds or missing:
        raise SSLUserError(f"no finished training (checkpoint_final.pth) for fold(s) {missing or 'any'} in {source}.",
                           "finish training first, or pass -f with finished folds")
    target = model_folder(name, STOCK_TRAINER, plans, configuration, output_results)
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
                rewrite_checkpoint(src, dst)
            else:
                shutil.copy2(src, dst)
    atomic_save_json({"exported_from": source, "original_trainer": trainer, "folds": folds,
                      "note": "weights unchanged; trainer_name rewritten to nnUNetTrainer"},
                     join(target, "nnunet_ssl_provenance.json"))
    print(f"exported {len(folds)} fold(s) to {target}\npredict with stock nnU-Net (no plugin needed):\n"
          f"  nnUNet_results={output_results} nnUNetv2_predict -i IN -o OUT -d {dataset} -c {configuration} "
          f"-p {plans} -tr nnUNetTrainer -f {' '.join(folds)}")
    return target
