"""What a pretraining was trained on, how a fine-tuning's plans compare with it, and which file a fine-tuning
started from.

- ``training_data_description``: the plans' view of the data (plans and data identifier, configuration,
  channels, normalisation per channel, target spacing, patch, architecture). The pretrainer stores it in the
  checkpoint metadata; a fine-tuning builds the same for its own plans.
- ``compare_with_pretraining`` (pure): which differences change what the encoder's features mean
  (``MEANING_FIELDS`` and the architecture: refused unless ``nnUNet_ssl_allow_plans_change=1``), which only
  change the scale the features were learnt at (``SCALE_FIELDS``: a warning), and what an older checkpoint does
  not record (not checked, said in the load report).
- ``pretrained_init.json`` in nnU-Net's fold folder: the file a fine-tuning loaded (path, method, sha256), so
  that ``--c`` and ``--val`` use the record instead of looking the pretraining up again.
"""
import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from os.path import isfile, join

from nnunet_ssl.atomic_io import atomic_save_json
from nnunet_ssl.errors import SSLUserError
from nnunet_ssl.integration.encoder import architecture_differences, comparable_description

# one override for every difference that changes what the features mean; the older name (architecture only,
# before issue 37) is still honoured
ALLOW_PLANS_CHANGE_ENV = "nnUNet_ssl_allow_plans_change"
ALLOW_PLANS_CHANGE_ENVS = (ALLOW_PLANS_CHANGE_ENV, "nnUNet_ssl_allow_architecture_change")

# another input mapping: the same weights see other numbers (normalisation) or other images (channels)
MEANING_FIELDS = ("num_input_channels", "channel_names", "normalization_schemes", "use_mask_for_norm")
# the same kind of input at another size: features learnt at one scale, used at another
SCALE_FIELDS = ("spacing", "patch_size", "data_identifier")
RECORD = "pretrained_init.json"  # in nnU-Net's fold folder


def training_data_description(plans_manager, configuration_name: str, configuration, dataset_json: dict,
                              num_input_channels: int) -> dict:
    """What a network of these plans is trained on, in JSON types, as stored in SSLCheckpointMeta."""
    return {"plans_identifier": plans_manager.plans_name, "data_identifier": configuration.data_identifier,
            "configuration": configuration_name, "num_input_channels": int(num_input_channels),
            "channel_names": {str(k): str(v) for k, v in
                              dataset_json.get("channel_names", dataset_json.get("modality", {})).items()},
            "normalization_schemes": list(configuration.normalization_schemes),
            "use_mask_for_norm": [bool(x) for x in configuration.use_mask_for_norm],
            "spacing": [float(s) for s in configuration.spacing],
            "patch_size": [int(s) for s in configuration.patch_size],
            "architecture": comparable_description(configuration)}


@dataclass
class PlansComparison:
    refused: list[str] = field(default_factory=list)  # "field: pretraining -> this run", meaning changes
    warned: list[str] = field(default_factory=list)  # the same for scale changes
    unchecked: list[str] = field(default_factory=list)  # fields the checkpoint does not record


def _difference(name: str, recorded, current) -> str:
    return f"{name}: {recorded!r} -> {current!r}"


def compare_with_pretraining(recorded: dict, current: dict) -> PlansComparison:
    """Compare the checkpoint's metadata (``recorded``) with this run's ``training_data_description`` (or the
    part of it given: only the fields in ``current`` are compared). None or absent in ``recorded``: not
    recorded, so not checked."""
    result = PlansComparison()
    for names, differences in ((MEANING_FIELDS, result.refused), (SCALE_FIELDS, result.warned)):
        for name in names:
            if name not in current:
                continue
            if recorded.get(name) is None:
                result.unchecked.append(name)
            elif _comparable(recorded[name]) != _comparable(current[name]):
                differences.append(_difference(name, recorded[name], current[name]))
    if "architecture" in current:
        if not recorded.get("architecture"):
            result.unchecked.append("architecture")
        else:
            result.refused += architecture_differences(recorded["architecture"], current["architecture"])
    return result


def _comparable(value):
    """Tuples and lists, ints and floats compare alike (JSON makes lists; 1 == 1.0 as spacing)."""
    return json.loads(json.dumps(value))


def plans_change_allowed(environ=os.environ) -> bool:
    return any(environ.get(name, "").lower() in ("1", "true", "yes") for name in ALLOW_PLANS_CHANGE_ENVS)


def check_against_pretraining(meta, current: dict, path: str, environ=os.environ) -> list[str]:
    """Refuse a checkpoint whose features would mean something else in this run (naming every differing field
    with both values) unless nnUNet_ssl_allow_plans_change=1; return the lines for the load report: warnings for
    scale differences (and for allowed meaning differences), and what could not be checked."""
    comparison = compare_with_pretraining(meta.to_dict(), current)
    where = f"pretrained with plans {meta.plans_identifier!r}, configuration {meta.configuration!r}" + (
        f"; this run: plans {current['plans_identifier']!r}, configuration {current['configuration']!r}"
        if {"plans_identifier", "configuration"} <= current.keys() else "")
    lines = []
    if comparison.refused:
        listed = "\n    ".join(comparison.refused)
        if not plans_change_allowed(environ):
            raise SSLUserError(
                f"the pretrained encoder in {path} was pretrained with another architecture, normalisation or input "
                f"channels than this run ({where}); its weights would compute something else here "
                f"(pretraining -> this run):\n    {listed}",
                "fine-tune with the plans and dataset used for pretraining, or pretrain for these plans; to load it "
                f"anyway, export {ALLOW_PLANS_CHANGE_ENV}=1")
        lines.append(f"WARNING: the pretrained encoder in {path} was trained with another architecture, "
                     f"normalisation or input channels ({where}); loaded anyway ({ALLOW_PLANS_CHANGE_ENV} is set), "
                     f"pretraining -> this run:\n    {listed}")
    if comparison.warned:
        lines.append(f"WARNING: the pretrained encoder in {path} was trained at another scale ({where}); its features "
                     "were learnt at the pretraining's spacing and patch, pretraining -> this run:\n    "
                     + "\n    ".join(comparison.warned))
    if comparison.unchecked:
        lines.append("    not checked, not recorded in this (older) checkpoint: " + ", ".join(comparison.unchecked))
    return lines


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_record(fold_folder: str, path: str, found_by: str, meta, sha256: str, trainer: str) -> dict:
    """pretrained_init.json: which file this fine-tuning started from."""
    record = {"path": os.path.abspath(path), "sha256": sha256, "method": meta.method, "found_by": found_by,
              "dataset_name": meta.dataset_name, "plans_identifier": meta.plans_identifier,
              "configuration": meta.configuration, "epochs_completed": meta.epochs_completed, "trainer": trainer,
              "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    atomic_save_json(record, join(fold_folder, RECORD), indent=1)
    return record


def read_record(fold_folder: str) -> dict | None:
    """The fold folder's record, or None when there is none (a run started before issue 37) or it is unreadable."""
    try:
        with open(join(fold_folder, RECORD)) as f:
            record = json.load(f)
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and {"path", "sha256", "method"} <= record.keys() else None


def record_line(record: dict) -> str:
    return (f"pretrained encoder: {record['path']} (method {record['method']}, sha256 {record['sha256']}, "
            f"chosen by {record.get('found_by', '?')})")


def record_problem(record: dict) -> str | None:
    """Why the recorded file is no longer the one the run started from, or None when it still is."""
    if not isfile(record["path"]):
        return f"{record['path']} is gone"
    now = file_sha256(record["path"])
    if now != record["sha256"]:
        return f"{record['path']} has changed (sha256 now {now}, recorded {record['sha256']})"
    return None
