"""Load a pretrained encoder into ``network.encoder`` of an nnU-Net network.

Loading into the submodule (not by key matching over the full state dict) keeps the aliases the
default UNets carry consistent: ``decoder.encoder.*`` and ``all_modules.N`` are the same tensors.
"""
from dataclasses import dataclass

from torch import nn

from nnunet_ssl.errors import SSLUserError
from nnunet_ssl.integration.checkpoint import SSLCheckpointMeta, load_encoder_checkpoint

WRAPPER_PREFIXES = ("module.", "_orig_mod.")  # DDP and torch.compile


@dataclass
class LoadReport:
    path: str
    meta: SSLCheckpointMeta
    loaded: int

    def summary(self) -> str:
        m = self.meta
        return (f"loaded pretrained encoder ({self.loaded} tensors) from {self.path}: method {m.method}, "
                f"{m.dataset_name} / {m.plans_identifier} / {m.configuration}, {len(m.case_ids)} cases, "
                f"{m.epochs_completed} epochs")


def unwrap(network: nn.Module) -> nn.Module:
    while hasattr(network, "module") or hasattr(network, "_orig_mod"):
        network = getattr(network, "module", None) or getattr(network, "_orig_mod")
    return network


def strip_wrapper_prefixes(state_dict: dict) -> dict:
    cleaned = {}
    for key, value in state_dict.items():
        while key.startswith(WRAPPER_PREFIXES):
            key = key.split(".", 1)[1]
        cleaned[key] = value
    return cleaned


def encoder_mismatches(target: dict, source: dict) -> list[str]:
    """Human-readable differences between two encoder state dicts (empty when compatible)."""
    problems = [f"missing in checkpoint: {k}" for k in target if k not in source]
    problems += [f"not in this network: {k}" for k in source if k not in target]
    problems += [f"shape {tuple(source[k].shape)} in checkpoint vs {tuple(v.shape)} here: {k}"
                 for k, v in target.items() if k in source and tuple(source[k].shape) != tuple(v.shape)]
    return problems


def load_pretrained_encoder(network: nn.Module, path: str) -> LoadReport:
    state, meta = load_encoder_checkpoint(path)
    encoder = unwrap(network).encoder
    state = strip_wrapper_prefixes(state)
    problems = encoder_mismatches(encoder.state_dict(), state)
    if problems:
        shown = "\n    ".join(problems[:10]) + (f"\n    ... and {len(problems) - 10} more" if len(problems) > 10 else "")
        raise SSLUserError(
            f"the pretrained encoder in {path} does not fit this network (pretrained with plans "
            f"{meta.plans_identifier!r}, configuration {meta.configuration!r}):\n    {shown}",
            "fine-tune with the plans and configuration used for pretraining (-p/-c), or pretrain for these")
    encoder.load_state_dict(state, strict=True)
    # count distinct tensors: nnU-Net's conv blocks expose each one twice (conv / all_modules.N)
    return LoadReport(path=path, meta=meta, loaded=len({v.data_ptr() for v in encoder.state_dict().values()}))
