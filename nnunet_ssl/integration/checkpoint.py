"""The pretrained-encoder checkpoint format: encoder weights plus versioned metadata.

One file, ``checkpoint_final.pth``: ``{"format": FORMAT_NAME, "meta": {...}, "encoder_state_dict": {...}}``
and, for methods that train the whole network (reconstruction), ``"decoder_state_dict": {...}``.
Weights are ``network.encoder.state_dict()`` (no ``decoder.encoder.*`` alias, no optimizer) and the
decoder's without its encoder alias and without the output layers (``seg_layers.*``), and
the metadata is plain JSON-able data, so the file loads with ``torch.load(weights_only=True)``.
Every write goes to a temporary file first and is renamed into place, so a crash never leaves a
half-written checkpoint under the final name. The metadata inside the .pth is the truth; the
``checkpoint_final.json`` beside it is derived from it, written right after it, and re-derived
whenever it is missing or differs (``write_final_json``), so the two never disagree for long.
"""
import json
import os
from dataclasses import asdict, dataclass, field, fields
from importlib.metadata import PackageNotFoundError, version

import numpy as np
import torch

from nnunet_ssl.atomic_io import atomic_save_json, atomic_torch_save
from nnunet_ssl.errors import SSLUserError

FORMAT_NAME = "nnunet-ssl-encoder"
FORMAT_VERSION = 1


def package_versions() -> dict[str, str]:
    result = {}
    for name in ("nnunet-ssl", "nnunetv2", "torch", "dynamic_network_architectures", "batchgeneratorsv2"):
        try:
            result[name] = version(name)
        except PackageNotFoundError:
            result[name] = "not installed"
    return result


@dataclass
class SSLCheckpointMeta:
    method: str
    hparams: dict  # the method's config and the pretraining schedule, every value used
    dataset_name: str
    plans_identifier: str
    configuration: str
    architecture_hash: str
    architecture: dict
    num_input_channels: int
    channel_names: dict
    normalization_schemes: list
    seed: int
    case_ids: list
    epochs_completed: int = 0
    final_metrics: dict = field(default_factory=dict)
    # blocks.health.learning_verdict of the last epoch, plus the encoder's conv weight scale against He init;
    # {} in checkpoints written before issue 10 (SSLInitTrainer then has no verdict to check)
    health: dict = field(default_factory=dict)
    resumes: list = field(default_factory=list)  # one {"epoch": E, "time": ISO} per --c that continued
    # what the data looked like (provenance.training_data_description); None in checkpoints written before
    # issue 37: a fine-tuning then cannot compare them and says so
    data_identifier: str | None = None
    use_mask_for_norm: list | None = None
    spacing: list | None = None  # the configuration's target spacing
    patch_size: list | None = None  # the plans' patch of the configuration (the pretraining patch is in hparams)
    versions: dict = field(default_factory=package_versions)
    format_version: int = FORMAT_VERSION

    def to_dict(self) -> dict:
        """Plain JSON types only (numpy scalars become floats, tuples lists); anything that is not
        JSON-serialisable raises TypeError, so saving fails instead of losing information."""
        return json.loads(json.dumps(asdict(self), default=_numpy_scalar))

    @classmethod
    def from_dict(cls, data: dict) -> "SSLCheckpointMeta":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def _numpy_scalar(value):
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable: {value!r}")


DECODER_EXCLUDED_PREFIXES = ("encoder.", "seg_layers.")  # the encoder alias; output layers are task-specific


def decoder_weights(network) -> dict:
    """What a checkpoint keeps of ``network.decoder``: everything but the encoder alias and the output layers
    (a reconstruction network's have one channel per input channel, a segmentation network's one per class)."""
    return {k: v for k, v in network.decoder.state_dict().items() if not k.startswith(DECODER_EXCLUDED_PREFIXES)}


def save_encoder_checkpoint(path: str, encoder_state_dict: dict, meta: SSLCheckpointMeta,
                            decoder_state_dict: dict | None = None) -> None:
    """Encoder weights (and, when given, decoder weights from ``decoder_weights``) with the metadata."""
    state = {"format": FORMAT_NAME, "meta": meta.to_dict(),
             "encoder_state_dict": {k: v.detach().cpu() for k, v in encoder_state_dict.items()}}
    if decoder_state_dict is not None:
        state["decoder_state_dict"] = {k: v.detach().cpu() for k, v in decoder_state_dict.items()}
    atomic_torch_save(state, path)


def json_path(final_path: str) -> str:
    return os.path.splitext(final_path)[0] + ".json"


def write_final_json(final_path: str, meta: SSLCheckpointMeta | None = None) -> bool:
    """Write ``checkpoint_final.json`` from the metadata in ``checkpoint_final.pth`` when it is missing
    or differs (e.g. a kill between the two writes); returns whether it wrote."""
    meta = meta or load_encoder_checkpoint(final_path)[1]
    target, data = json_path(final_path), meta.to_dict()
    try:
        with open(target) as f:
            if json.load(f) == data:
                return False
    except (OSError, ValueError):
        pass
    atomic_save_json(data, target, indent=1)
    return True


def save_final_checkpoint(path: str, encoder_state_dict: dict, meta: SSLCheckpointMeta,
                          decoder_state_dict: dict | None = None) -> None:
    """The .pth (with the metadata, the truth) first, then the .json derived from it."""
    save_encoder_checkpoint(path, encoder_state_dict, meta, decoder_state_dict)
    write_final_json(path, meta)


CORRUPT_FINAL_FIX = ("run the same nnUNetv2_ssl_pretrain command again with --c: it writes checkpoint_final.pth anew "
                     "from checkpoint_latest.pth (keeping the damaged file as checkpoint_final.pth.corrupt), or says "
                     "what else to do")


def load_encoder_checkpoint(path: str) -> tuple[dict, SSLCheckpointMeta]:
    """Return (encoder state dict on CPU, metadata); a clear SSLUserError for every bad file."""
    encoder_state, _decoder_state, meta = load_checkpoint(path)
    return encoder_state, meta


def load_checkpoint(path: str) -> tuple[dict, dict | None, SSLCheckpointMeta]:
    """Return (encoder state dict, decoder state dict or None, metadata), on CPU; SSLUserError for bad files."""
    rerun = "re-run nnUNetv2_ssl_pretrain for this dataset, plans and configuration"
    if not os.path.isfile(path):
        raise SSLUserError(f"no pretrained checkpoint at {path}.", rerun)
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, wrong pickle, ...: all mean "not a usable file"
        raise SSLUserError(f"{path} is not a readable checkpoint (truncated or corrupt?): "
                           f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}",
                           CORRUPT_FINAL_FIX) from None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != FORMAT_NAME:
        raise SSLUserError(f"{path} is not an nnunet-ssl encoder checkpoint (expected format {FORMAT_NAME!r}).",
                           "point nnUNet_ssl_weights at a checkpoint_final.pth written by nnUNetv2_ssl_pretrain")
    meta = checkpoint["meta"]
    if meta.get("format_version", 0) > FORMAT_VERSION:
        raise SSLUserError(f"{path} uses checkpoint format {meta['format_version']}, newer than this nnunet-ssl "
                           f"understands ({FORMAT_VERSION}).", "pip install --upgrade nnunet-ssl")
    return checkpoint["encoder_state_dict"], checkpoint.get("decoder_state_dict"), SSLCheckpointMeta.from_dict(meta)


def finished_checkpoint(final: str, folder: str, resume: bool):
    """The metadata of a readable checkpoint_final.pth (its .json re-derived if a kill lost it), else None.
    A damaged one gets one instruction: --c, which keeps it as .corrupt and writes it again from
    checkpoint_latest.pth."""
    from nnunet_ssl.integration import locations

    try:
        _state, meta = load_encoder_checkpoint(final)
    except SSLUserError as e:
        if not resume:
            raise SSLUserError(f"{final} is damaged: {e.problem}", CORRUPT_FINAL_FIX) from None
        if not os.path.isfile(os.path.join(folder, locations.LATEST)):
            raise SSLUserError(f"{final} is damaged and there is no checkpoint_latest.pth to write it from.",
                               f"move {folder} away and pretrain again (without --c)") from None
        kept = _free_name(final + ".corrupt")
        os.replace(final, kept)
        print(f"kept the damaged {final} as {kept}; writing it again from checkpoint_latest.pth")
        return None
    if write_final_json(final, meta):
        print(f"wrote the missing {locations.FINAL[:-4]}.json from the metadata inside {final}")
    return meta


def _free_name(path: str) -> str:
    """``path``, or ``path.N`` with the first N that does not exist: nothing a user has is overwritten."""
    candidate, n = path, 1
    while os.path.exists(candidate):
        candidate, n = f"{path}.{n}", n + 1
    return candidate
