"""Export a fine-tuned model so that stock nnU-Net uses it without this plugin (nnUNetv2_ssl_export).

Our trainers change how training starts (weights, schedule), not the network nnU-Net builds, so a
model folder is valid for ``nnUNetTrainer`` once the checkpoints name it. The export copies the
model folder under ``nnUNetTrainer__<plans>__<configuration>`` in another results folder, rewrites
``trainer_name`` and records where the model came from in ``nnunet_ssl_provenance.json``.
"""
import contextlib
import os
import shutil
from os.path import isdir, isfile, join

from nnunet_ssl.atomic_io import atomic_save_json, atomic_torch_save
from nnunet_ssl.errors import SSLUserError

COPIED = ("plans.json", "dataset.json", "dataset_fingerprint.json")
FOLD_FILES = ("checkpoint_final.pth", "progress.png", "debug.json", os.path.join("validation", "summary.json"))
STOCK_TRAINER = "nnUNetTrainer"
PARTIAL_SUFFIX = ".nnunet_ssl_partial"


def rewrite_checkpoint(source: str, target: str) -> None:
    """Copy an nnU-Net checkpoint with ``trainer_name`` set to stock nnUNetTrainer (weights unchanged)."""
    import torch
    try:
        checkpoint = torch.load(source, map_location="cpu", weights_only=False)
    except Exception as e:  # truncated or damaged: name it, the export leaves nothing behind
        raise SSLUserError(f"{source} is not readable ({type(e).__name__}: truncated or damaged); nothing was "
                           "exported.", "train that fold again (nnUNetv2_train ... --c), restore the file, or "
                           "leave the fold out with -f") from None
    checkpoint["trainer_name"] = STOCK_TRAINER
    checkpoint.pop("nnunet_ssl_mean_teacher", None)  # a mean teacher's student: only --c needs it
    atomic_torch_save(checkpoint, target)


def _copy_model(source: str, target: str, folds: list[str]) -> None:
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
    blocking = next((p for p in (output_results, os.path.dirname(target)) if os.path.exists(p) and not isdir(p)),
                    None)
    if blocking:
        raise SSLUserError(f"{blocking} is a file, not a folder; nothing was exported.",
                           "pass -o a results folder (new or an nnUNet_results), or move that file away")
    if os.path.exists(target):
        raise SSLUserError(f"{target} exists; nothing was overwritten.", "choose another -o, or move it away")
    # written under a temporary name and renamed when complete: a failed export leaves no half model that
    # stock nnU-Net would use, nor one that blocks running the export again
    partial = target + PARTIAL_SUFFIX
    shutil.rmtree(partial, ignore_errors=True)  # what a killed export left
    made = [p for p in (output_results, os.path.dirname(target)) if not os.path.exists(p)]
    try:
        _copy_model(source, partial, folds)
        atomic_save_json({"exported_from": source, "original_trainer": trainer, "folds": folds,
                          "note": "weights unchanged; trainer_name rewritten to nnUNetTrainer"},
                         join(partial, "nnunet_ssl_provenance.json"))
        os.rename(partial, target)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        for folder in reversed(made):  # the folders this export made, when they stayed empty
            with contextlib.suppress(OSError):
                os.rmdir(folder)
        raise
    print(f"exported {len(folds)} fold(s) to {target}\npredict with stock nnU-Net (no plugin needed):\n"
          f"  nnUNet_results={output_results} nnUNetv2_predict -i IN -o OUT -d {dataset} -c {configuration} "
          f"-p {plans} -tr nnUNetTrainer -f {' '.join(folds)}")
    return target
