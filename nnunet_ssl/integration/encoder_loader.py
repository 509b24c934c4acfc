"""Load a pretrained encoder into ``network.encoder`` of an nnU-Net network.

Loading into the submodule (not by key matching over the full state dict) keeps the aliases the
default UNets carry consistent: ``decoder.encoder.*`` and ``all_modules.N`` are the same tensors.

When the fine-tuning dataset has a different number of input channels than the pretraining one,
the input projection (the first conv) is adapted with :func:`adapt_input_channels`. Which conv that
is comes from the architecture's ``keys_to_in_proj`` (dynamic_network_architectures): for
PlainConvUNet it is ``stages.0.0.convs.0.conv`` *inside* the first stage, for ResidualEncoderUNet
``stem.convs.0.conv``. Every other shape difference is refused with the list of offending keys.

Two safeguards against a checkpoint that would silently harm fine-tuning (issue 10, item 6):

- weight scale: contrastive SGD on convs followed by InstanceNorm grows their weights (their scale does
  not change the function, and the gradient is orthogonal to the weight, so every step adds to its
  norm); fine-tuning's effective learning rate on them then falls with the square of that growth. By
  default every encoder conv that feeds an InstanceNorm is rescaled to nnU-Net's He-init std
  (:func:`rescale_convs_to_he_std`): the network computes the same function, fine-tuning starts at the
  effective step size of a fresh network. ``nnUNet_ssl_keep_weight_scale=1`` turns it off.
- health: a checkpoint whose pretraining ended with the verdict ``no_learning`` is refused
  (:func:`check_pretraining_health`) unless ``nnUNet_ssl_allow_unhealthy=1``.
"""
import os

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from nnunet_ssl.blocks.health import he_std
from nnunet_ssl.errors import SSLUserError
from nnunet_ssl.integration.checkpoint import (DECODER_EXCLUDED_PREFIXES, SSLCheckpointMeta, load_checkpoint,
                                               load_encoder_checkpoint)
from nnunet_ssl.integration.provenance import check_against_pretraining

WRAPPER_PREFIXES = ("module.", "_orig_mod.")  # DDP and torch.compile
KEEP_WEIGHT_SCALE_ENV = "nnUNet_ssl_keep_weight_scale"
ALLOW_UNHEALTHY_ENV = "nnUNet_ssl_allow_unhealthy"
ENCODER_PREFIX = "encoder."  # keys_to_in_proj are relative to the full network


@dataclass
class LoadReport:
    path: str
    meta: SSLCheckpointMeta
    loaded: int  # distinct tensors (aliases counted once)
    adapted: list[str] = field(default_factory=list)  # "key: from N to M channels"
    decoder_loaded: list[str] | None = None  # full-network loading: decoder keys taken from the checkpoint
    random_keys: list[str] = field(default_factory=list)  # full-network loading: keys left at their random init
    fresh_first_stage: list[str] = field(default_factory=list)  # encoder keys kept at their random init
    # conv weight std / He std before rescaling, by conv module name; empty when not rescaled
    rescaled: dict[str, float] = field(default_factory=dict)
    rescale_skipped: list[str] = field(default_factory=list)  # convs not followed by InstanceNorm: kept
    rescale_disabled: bool = False
    warnings: list[str] = field(default_factory=list)

    def summary(self) -> str:
        m = self.meta
        what = "encoder" if self.decoder_loaded is None else "encoder and decoder"
        lines = [f"loaded pretrained {what} ({self.loaded} tensors) from {self.path}",
                 f"    method {m.method}, pretrained on {m.dataset_name} / {m.plans_identifier} / {m.configuration}, "
                 f"{len(m.case_ids)} cases, {m.epochs_completed} epochs"]
        if self.fresh_first_stage:
            lines.append(f"    the encoder's first stage kept at its random init ({len(self.fresh_first_stage)} "
                         f"entries: {self.fresh_first_stage[0]} ... {self.fresh_first_stage[-1]}); the rest loaded")
        if self.decoder_loaded is None:
            lines.append("    every encoder tensor loaded, none skipped; the decoder stays randomly initialised"
                         if not self.fresh_first_stage else "    the decoder stays randomly initialised")
        else:
            lines.append(f"    every encoder tensor and {len(self.decoder_loaded)} decoder tensors loaded: "
                         + ", ".join(self.decoder_loaded))
            lines.append(f"    randomly initialised ({len(self.random_keys)}, the segmentation output layers): "
                         + ", ".join(self.random_keys))
        if self.adapted:
            lines.append("    input channels adapted (kernel summed over the pretraining channels, spread evenly "
                         "over the new ones): " + "; ".join(self.adapted))
        if self.rescaled:
            ratios = sorted(self.rescaled.values())
            lines.append(f"    {len(ratios)} encoder convs rescaled to nnU-Net's He-init std (they feed InstanceNorm: "
                         f"same function); their std was {ratios[0]:.2f}-{ratios[-1]:.2f} x He "
                         f"(median {ratios[len(ratios) // 2]:.2f}). {KEEP_WEIGHT_SCALE_ENV}=1 keeps the pretrained "
                         "scale")
        if self.rescale_skipped:
            lines.append(f"    not rescaled (no InstanceNorm after them): {', '.join(self.rescale_skipped)}")
        if self.rescale_disabled:
            lines.append(f"    conv weight scale kept as pretrained ({KEEP_WEIGHT_SCALE_ENV}=1)")
        redundancy = (m.final_metrics or {}).get("stage0_redundancy")
        if redundancy is not None:
            lines.append(f"    first-stage channel redundancy at the end of pretraining: {redundancy:.2f} (mean |r| "
                         "between its channels; nnU-Net's He init about 0.1-0.2; after short pretrainings 0.6-0.7 "
                         "went with late class onsets, docs/methods/readouts.md; SSLInitTrainer_freshFirstStage "
                         "keeps that stage random)")
        health = m.health or {}
        if health.get("verdict"):
            lines.append(f"    pretraining health: {health['verdict']} ({health.get('reason', '')})")
        lines += self.warnings
        return "\n".join(lines)


def adapt_input_channels(weight: Tensor, target_channels: int) -> Tensor:
    """Adapt a conv weight of shape (out, in, *kernel) to ``target_channels`` input channels.

    The rule keeps the response to a constant image (the same value in every channel) unchanged:
    for every output channel and kernel offset, the sum over input channels is preserved.

    * 1 -> M: the kernel is repeated over the M channels and divided by M;
    * N -> 1: the kernel is summed over the N channels;
    * N -> M (both > 1, the fallback, since no channel correspondence is known): summed over the N
      channels (= the mean times N), then repeated over the M channels and divided by M. This is
      the composition of the two rules above; per-channel specialisation of the pretrained kernel
      is lost, only its channel-averaged shape survives.
    * N -> N: returned unchanged (a copy).
    """
    if weight.dim() < 3:
        raise ValueError(f"expected a conv weight (out, in, *kernel), got shape {tuple(weight.shape)}")
    if target_channels < 1:
        raise ValueError(f"target_channels must be >= 1, got {target_channels}")
    if weight.shape[1] == target_channels:
        return weight.clone()
    summed = weight.sum(dim=1, keepdim=True)
    repeats = (1, target_channels) + (1,) * (weight.dim() - 2)
    return summed.repeat(*repeats) / target_channels


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


def input_projection_keys(network: nn.Module, encoder_state: dict) -> list[list[str]]:
    """The encoder state-dict keys of the input projection weight(s), grouped by tensor: each group
    holds every alias of one tensor (e.g. ``...convs.0.conv.weight`` and ``...convs.0.all_modules.0.weight``),
    in state-dict order.

    Uses the architecture's ``keys_to_in_proj`` (module paths relative to the network, prefixed with
    ``encoder.``); falls back to the encoder's first conv when the architecture does not declare them.
    """
    declared = [k[len(ENCODER_PREFIX):] + ".weight" for k in getattr(network, "keys_to_in_proj", None) or ()
                if k.startswith(ENCODER_PREFIX)]
    declared = [k for k in declared if k in encoder_state]
    if not declared:
        first_conv = next((name for name, m in network.encoder.named_modules()
                           if isinstance(m, nn.modules.conv._ConvNd)), None)
        if first_conv is None or f"{first_conv}.weight" not in encoder_state:
            return []
        declared = [f"{first_conv}.weight"]
    groups, seen = [], set()
    for key in declared:
        if key in seen:
            continue
        tensor = encoder_state[key]
        group = [k for k, v in encoder_state.items()
                 if v.data_ptr() == tensor.data_ptr() and v.shape == tensor.shape and v.numel() > 0] or [key]
        seen.update(group)
        groups.append(group)
    return groups


def adapt_input_projection(network: nn.Module, encoder_state: dict, state: dict) -> list[str]:
    """Adapt, in ``state``, the input projection weights whose shape differs from the network's only in
    dim 1 (input channels); every alias present in ``state`` is replaced. Returns report lines."""
    adapted = []
    for group in input_projection_keys(network, encoder_state):
        present = [k for k in group if k in state]
        if not present:
            continue  # reported as missing by encoder_mismatches
        target_shape = tuple(encoder_state[group[0]].shape)
        shapes = {tuple(state[k].shape) for k in present}
        if len(shapes) != 1:
            continue  # inconsistent aliases in the checkpoint: reported as shape mismatches
        source_shape = shapes.pop()
        if (source_shape == target_shape or len(source_shape) != len(target_shape)
                or source_shape[:1] + source_shape[2:] != target_shape[:1] + target_shape[2:]):
            continue  # nothing to adapt, or a mismatch beyond input channels (refused later)
        for key in present:
            state[key] = adapt_input_channels(state[key], target_shape[1])
        adapted.append(f"{group[0]}: from {source_shape[1]} to {target_shape[1]} channels")
    return adapted


def convs_before_instance_norm(encoder: nn.Module) -> tuple[dict[str, nn.Module], list[str]]:
    """Encoder convs whose output goes straight (through dropout at most) into an InstanceNorm, by module
    name; and the names of the other convs. dynamic_network_architectures puts each conv with its norm in
    one ConvDropoutNormReLU (attributes ``conv`` and ``norm``), in plain and residual encoders alike."""
    invariant, others = {}, []
    for name, module in encoder.named_modules():
        conv = getattr(module, "conv", None)
        if isinstance(conv, nn.modules.conv._ConvNd):
            key = f"{name}.conv" if name else "conv"
            if isinstance(getattr(module, "norm", None), nn.modules.instancenorm._InstanceNorm):
                invariant[key] = conv
            else:
                others.append(key)
    return invariant, others


@torch.no_grad()
def rescale_convs_to_he_std(encoder: nn.Module) -> tuple[dict[str, float], list[str]]:
    """Scale every conv that feeds an InstanceNorm (weight and bias by the same c) so that its weight std is
    nnU-Net's He-init std; returns {conv: std / He std before} and the convs left alone.

    Exact up to InstanceNorm's eps: IN(c·y) = (y - mean y) / sqrt(var y + eps / c²), so the function is the
    same whenever eps is negligible against the conv output's variance (eps = 1e-5 in nnU-Net's plans).
    Holds for a conv followed by InstanceNorm with or without affine (the affine parameters act after the
    normalisation) and for any dropout in between (it commutes with the scale); not for BatchNorm in
    eval mode, nor for a conv without a norm: those are not touched."""
    invariant, others = convs_before_instance_norm(encoder)
    ratios = {}
    for name, conv in invariant.items():
        std = conv.weight.float().std().item()
        target = he_std(conv.weight)
        if not std > 0:
            continue
        ratios[name] = std / target
        factor = target / std
        conv.weight.mul_(factor)
        if conv.bias is not None:
            conv.bias.mul_(factor)
    return ratios, others


def check_pretraining_health(meta: SSLCheckpointMeta, path: str, environ=os.environ) -> None:
    """Refuse a checkpoint whose pretraining ended without learning, unless explicitly allowed."""
    health = meta.health or {}
    if health.get("verdict") != "no_learning" or environ.get(ALLOW_UNHEALTHY_ENV, "0").lower() in ("1", "true"):
        return
    raise SSLUserError(
        f"the pretraining in {path} shows no learning: {health.get('reason', 'no reason recorded')}. Fine-tuning "
        "from it is likely no better than from scratch and was measured to be worse (issue 10: -0.20 Dice, one "
        "fold predicting nothing).",
        f"pretrain again (another --set readout=..., a longer run or another --lr), or set {ALLOW_UNHEALTHY_ENV}=1 "
        "to fine-tune from it anyway")


def _named_by_variable(path: str) -> str:
    from nnunet_ssl.integration.locations import WEIGHTS_ENV
    return WEIGHTS_ENV if os.environ.get(WEIGHTS_ENV) == path else ""


def load_checkpoint_file(path: str) -> tuple[dict, SSLCheckpointMeta]:
    """load_encoder_checkpoint; when nnUNet_ssl_weights named the file, every error says so."""
    try:
        return load_encoder_checkpoint(path)
    except SSLUserError as e:
        variable = _named_by_variable(path)
        if not variable:
            raise
        raise SSLUserError(f"{variable}={path}: {e.problem}",
                           f"point {variable} at a checkpoint_final.pth written by nnUNetv2_ssl_pretrain, or unset "
                           f"it to load the finished pretraining of this dataset, plans and configuration") from None


def first_stage_keys(encoder_state: dict) -> list[str]:
    """The encoder's full-resolution first stage: ``stages.0.*`` and, in a ResidualEncoder, its ``stem.*``."""
    return sorted(k for k in encoder_state if k.startswith(("stages.0.", "stem.")))


def load_pretrained_encoder(network: nn.Module, path: str, architecture: dict | None = None,
                            rescale: bool | None = None, environ=os.environ,
                            fresh_first_stage: bool = False, expected: dict | None = None) -> LoadReport:
    """Load the checkpoint's encoder into ``network.encoder``. ``expected`` (provenance.training_data_description
    of the run), or only its ``architecture`` (encoder.comparable_description), is compared with what the
    pretraining recorded (provenance.check_against_pretraining), after the weight shapes fit; ``rescale``
    (default: on unless nnUNet_ssl_keep_weight_scale=1) rescales the convs that feed InstanceNorm to He-init std;
    ``fresh_first_stage`` keeps the network's own random init in the first stage (first_stage_keys)."""
    state, meta = load_checkpoint_file(path)  # on CPU; load_state_dict copies to the module's device
    check_pretraining_health(meta, path, environ)
    if rescale is None:
        rescale = environ.get(KEEP_WEIGHT_SCALE_ENV, "0").lower() not in ("1", "true")
    network = unwrap(network)
    encoder = network.encoder
    state = strip_wrapper_prefixes(state)
    encoder_state = encoder.state_dict()
    fresh = {k: encoder_state[k].clone() for k in first_stage_keys(encoder_state)} if fresh_first_stage else {}
    with torch.no_grad():
        adapted = adapt_input_projection(network, encoder_state, state)
    refuse_mismatches("encoder", encoder_mismatches(encoder_state, state), path, meta)
    if expected is None and architecture is not None:
        expected = {"architecture": architecture}
    checks = check_against_pretraining(meta, expected, path, environ) if expected is not None else []
    encoder.load_state_dict(state, strict=True)
    rescaled, skipped = rescale_convs_to_he_std(encoder) if rescale else ({}, [])
    encoder.load_state_dict(fresh, strict=False)  # after the rescale: the random init exactly as it was
    # count distinct tensors: nnU-Net's conv blocks expose each one twice (conv / all_modules.N)
    loaded = {v.data_ptr() for k, v in encoder.state_dict().items() if k not in fresh}
    return LoadReport(path=path, meta=meta, loaded=len(loaded), adapted=adapted,
                      rescaled={k: v for k, v in rescaled.items() if f"{k}.weight" not in fresh},
                      rescale_skipped=skipped, rescale_disabled=not rescale, fresh_first_stage=sorted(fresh),
                      warnings=checks)


def refuse_mismatches(part: str, problems: list[str], path: str, meta: SSLCheckpointMeta) -> None:
    """One message for pretrained weights (``part``: encoder or decoder) whose keys or shapes do not fit."""
    if not problems:
        return
    shown = "\n    ".join(problems[:10]) + (f"\n    ... and {len(problems) - 10} more" if len(problems) > 10 else "")
    raise SSLUserError(
        f"the pretrained {part} in {path} does not fit this network (pretrained with plans "
        f"{meta.plans_identifier!r}, configuration {meta.configuration!r}):\n    {shown}",
        "fine-tune with the plans and configuration used for pretraining (-p/-c), or pretrain for these")


def load_pretrained_network(network: nn.Module, path: str, architecture: dict | None = None,
                            rescale: bool | None = None, expected: dict | None = None) -> LoadReport:
    """Encoder (as ``load_pretrained_encoder``) and decoder from a full-network checkpoint (reconstruction
    methods), except the segmentation output layers (``decoder.seg_layers.*``), which keep their random
    init: the checkpoint's had one output per input channel, not one per class. The report lists the
    decoder keys loaded and the keys left random; a checkpoint without a decoder is refused."""
    _encoder_state, decoder_state, meta = load_checkpoint(path)  # (load_pretrained_encoder names nnUNet_ssl_weights)
    if decoder_state is None:
        raise SSLUserError(f"{path} ({meta.method}) holds only an encoder, no decoder to load.",
                           "fine-tune it with SSLInitTrainer (encoder only), or pretrain a method that trains the "
                           "whole network (-m mae or -m models_genesis)")
    report = load_pretrained_encoder(network, path, architecture, rescale, expected=expected)
    decoder = unwrap(network).decoder
    target = {k: v for k, v in decoder.state_dict().items() if not k.startswith(DECODER_EXCLUDED_PREFIXES)}
    source = strip_wrapper_prefixes(decoder_state)
    refuse_mismatches("decoder", encoder_mismatches(target, source), path, meta)
    missing, unexpected = decoder.load_state_dict(source, strict=False)
    assert not unexpected, unexpected  # checked above
    report.decoder_loaded = sorted(f"decoder.{k}" for k in source)
    report.random_keys = sorted(f"decoder.{k}" for k in missing if not k.startswith("encoder."))
    report.loaded += len({v.data_ptr() for k, v in decoder.state_dict().items() if k in source})
    return report
