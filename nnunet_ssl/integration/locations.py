"""Where pretraining results live: beside nnU-Net's own model folders, named in its style.

    $nnUNet_results/DatasetXXX_Name/SSLPretrain_<method>__<plans>__<configuration>/
        checkpoint_final.pth    encoder weights + metadata (what SSLInitTrainer loads)
        checkpoint_final.json   the same metadata, human-readable
        checkpoint_latest.pth   full state for --c (method heads, optimizer, log)
        progress.png, progress.json, training_log.txt
"""
import os
from os.path import isdir, isfile, join

from nnunetv2.paths import nnUNet_results
from nnunetv2.utilities.file_path_utilities import convert_trainer_plans_config_to_identifier

from nnunet_ssl.errors import SSLUserError

PREFIX = "SSLPretrain_"
FINAL = "checkpoint_final.pth"
LATEST = "checkpoint_latest.pth"
WEIGHTS_ENV = "nnUNet_ssl_weights"  # explicit checkpoint path, overrides the lookup
METHOD_ENV = "nnUNet_ssl_method"  # which pretraining to use when several exist


def model_folder_name(trainer: str, plans_identifier: str, configuration: str) -> str:
    """nnU-Net's model folder name, <trainer>__<plans>__<configuration>, by nnU-Net's own function."""
    return convert_trainer_plans_config_to_identifier(trainer, plans_identifier, configuration)


def results_root(root: str | None = None, needed_for: str = "this command") -> str:
    """``root``, else $nnUNet_results; a clear error naming what needs it when neither is there."""
    if root:
        return root
    if not nnUNet_results.is_set():
        raise SSLUserError(f"nnUNet_results is not set; {needed_for} reads and writes there.",
                           "export nnUNet_results=/path/to/nnUNet_results (see nnU-Net's "
                           "documentation/setting_up_paths.md), or run nnUNetv2_ssl_doctor")
    return str(nnUNet_results)


def model_folder(dataset_name: str, trainer: str, plans_identifier: str, configuration: str,
                 root: str | None = None) -> str:
    """<results>/DatasetXXX/<trainer>__<plans>__<configuration>, in ``root`` or $nnUNet_results."""
    return join(results_root(root), dataset_name, model_folder_name(trainer, plans_identifier, configuration))


def pretraining_folder(dataset_name: str, method: str, plans_identifier: str, configuration: str) -> str:
    return join(results_root(needed_for="pretraining"), dataset_name,
                model_folder_name(PREFIX + method, plans_identifier, configuration))


def available_pretrainings(dataset_name: str, plans_identifier: str, configuration: str) -> dict[str, str]:
    """{method: checkpoint_final path} for every finished pretraining of this dataset/plans/config."""
    root = join(results_root(), dataset_name)
    suffix = model_folder_name("", plans_identifier, configuration)  # "__<plans>__<configuration>"
    found = {}
    if isdir(root):
        for name in sorted(os.listdir(root)):
            if name.startswith(PREFIX) and name.endswith(suffix) and isfile(join(root, name, FINAL)):
                found[name[len(PREFIX):-len(suffix)]] = join(root, name, FINAL)
    return found


def find_pretrained_checkpoint(dataset_name: str, plans_identifier: str, configuration: str,
                               method: str | None = None, environ=os.environ) -> tuple[str, str]:
    """The checkpoint a fine-tuning run should load and what chose it; never guesses between several.

    ``method`` is the method a trainer pins (``SSLInitTrainer_simclr``): nnUNet_ssl_method cannot override
    it (another value is refused, naming both); nnUNet_ssl_weights still names the file, and the trainer
    refuses it unless the file's metadata names the pinned method (``check_pinned_method``)."""
    variable_method = environ.get(METHOD_ENV) or None
    if method is not None and variable_method is not None and variable_method != method:
        raise SSLUserError(f"this trainer is pinned to the {method!r} pretraining, and {METHOD_ENV}="
                           f"{variable_method} asks for another.",
                           f"unset {METHOD_ENV} (the trainer's name chooses), or train the trainer pinned to "
                           f"{variable_method!r} (..._{variable_method}...)")
    explicit = environ.get(WEIGHTS_ENV)
    if explicit:
        return explicit, WEIGHTS_ENV
    found_by = "the trainer's pinned method" if method else f"{METHOD_ENV}={variable_method}" if variable_method \
        else "the only finished pretraining"
    method = method or variable_method
    found = available_pretrainings(dataset_name, plans_identifier, configuration)
    pretrain_cmd = (f"nnUNetv2_ssl_pretrain -d {dataset_name} -c {configuration} -p {plans_identifier}"
                    + (f" -m {method}" if method else ""))
    if method is not None:
        if method not in found:
            raise SSLUserError(f"no finished {method!r} pretraining for {dataset_name} / {plans_identifier} / "
                               f"{configuration} (found: {sorted(found) or 'none'}).", pretrain_cmd)
        return found[method], found_by
    if not found:
        raise SSLUserError(f"no pretrained encoder for {dataset_name} / {plans_identifier} / {configuration} "
                           f"under {join(str(nnUNet_results), dataset_name)}.",
                           f"{pretrain_cmd}   (or set {WEIGHTS_ENV}=/path/to/checkpoint_final.pth)")
    if len(found) > 1:
        raise SSLUserError(f"several pretrainings exist for {dataset_name} / {plans_identifier} / {configuration}: "
                           f"{sorted(found)}; which one to load is ambiguous.",
                           f"export {METHOD_ENV}=<one of {sorted(found)}>")
    return next(iter(found.values())), found_by


def check_pinned_method(pinned: str | None, checkpoint_method: str, path: str, found_by: str) -> None:
    """A trainer pinned to a method loads only a pretraining of that method, whoever named the file."""
    if pinned is None or checkpoint_method == pinned:
        return
    named = f"{WEIGHTS_ENV}={path}" if found_by == WEIGHTS_ENV else path
    raise SSLUserError(f"this trainer is pinned to the {pinned!r} pretraining, and {named} holds a "
                       f"{checkpoint_method!r} pretraining.",
                       f"unset {WEIGHTS_ENV} (the trainer's name chooses), point it at a {pinned!r} checkpoint, or "
                       f"train the trainer pinned to {checkpoint_method!r}" if found_by == WEIGHTS_ENV else
                       f"that folder holds another method's checkpoint: pretrain {pinned!r} again "
                       f"(nnUNetv2_ssl_pretrain -m {pinned}) after moving it away")
