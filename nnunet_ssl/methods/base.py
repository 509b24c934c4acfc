"""What every pretraining method is: an encoder plus heads, its sampler, and one training step."""
import json
import math
import types
import typing
from dataclasses import MISSING, asdict, dataclass, fields
from typing import ClassVar

import torch
from torch import nn

from nnunet_ssl.blocks.readouts import READOUTS, Readout
from nnunet_ssl.errors import SSLUserError


@dataclass(frozen=True)
class Range:
    """Allowed values of a numeric option (each element, for a tuple); ``why`` explains a bound."""
    low: float | None = None
    high: float | None = None
    low_open: bool = False  # True: low itself is not allowed
    high_open: bool = False
    why: str = ""

    def allows(self, value) -> bool:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if isinstance(value, float) and not math.isfinite(value):
            return False
        above = self.low is None or (value > self.low if self.low_open else value >= self.low)
        below = self.high is None or (value < self.high if self.high_open else value <= self.high)
        return above and below

    def describe(self) -> str:
        parts = []
        if self.low is not None:
            parts.append(f"{'>' if self.low_open else '>='} {self.low:g}")
        if self.high is not None:
            parts.append(f"{'<' if self.high_open else '<='} {self.high:g}")
        return " and ".join(parts) or "finite"


@dataclass(frozen=True)
class OneOf:
    """Allowed values of a text option (each element, for a tuple), declared as a set; ``why`` explains it."""
    values: tuple
    why: str = ""

    def allows(self, value) -> bool:
        return value in self.values

    def describe(self) -> str:
        return "one of " + ", ".join(repr(v) for v in self.values)


def type_problem(value, annotation) -> str | None:
    """What is wrong with ``value`` for a field annotated ``annotation`` (None: it fits). JSON gives
    lists for tuples and ints for whole floats; both are accepted."""
    allowed = typing.get_args(annotation) if isinstance(annotation, types.UnionType) or \
        typing.get_origin(annotation) is typing.Union else (annotation,)
    for kind in allowed:
        if kind is type(None) and value is None:
            return None
        if kind is bool and isinstance(value, bool):
            return None
        if kind is int and isinstance(value, int) and not isinstance(value, bool):
            return None
        if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return None
        if kind is str and isinstance(value, str):
            return None
        if kind in (tuple, list) and isinstance(value, (tuple, list)):
            return None
    names = {type(None): "none", bool: "true or false", int: "an integer", float: "a number", str: "a text",
             tuple: "a list like [1,2]", list: "a list like [1,2]"}
    return "must be " + " or ".join(names.get(k, getattr(k, "__name__", str(k))) for k in allowed)


def limit_problem(value, limit: Range | OneOf) -> str | None:
    """What is wrong with a (type-checked) value for ``limit`` (None: it fits); tuples per element."""
    items = value if isinstance(value, (tuple, list)) else [value]
    if any(not limit.allows(v) for v in items if v is not None):
        return f"must be {limit.describe()}" + (" for every element" if isinstance(value, (tuple, list)) else "") \
            + (f" ({limit.why})" if limit.why else "")
    return None


@dataclass(frozen=True)
class Hyperparameters:
    """Frozen hyperparameters; subclasses document each default's source next to it.

    Every instance validates itself when built: each value against its field's type, numbers
    against the class's ``LIMITS``, then the class's own ``check()`` for rules between fields. A
    bad value is an SSLUserError naming the option, the allowed values and an example."""

    LIMITS: ClassVar[dict[str, Range]] = {}
    OWNER: ClassVar[str] = ""  # how messages name these options (default: the class name)

    def __post_init__(self):
        hints = typing.get_type_hints(type(self))
        limits = self.limits()
        for f in fields(self):
            value = getattr(self, f.name)
            problem = type_problem(value, hints[f.name])
            if problem is None and f.name in limits:
                problem = limit_problem(value, limits[f.name])
            if problem is not None:
                raise SSLUserError(f"{self.owner()} option {f.name} = {value!r}: {problem}.",
                                   self.example(f.name, f.default))
        self.check()

    @classmethod
    def limits(cls) -> dict[str, Range | OneOf]:
        """Every field's declared limit: the LIMITS of this class and its bases (a subclass's win)."""
        merged = {}
        for klass in reversed(cls.__mro__):
            merged.update(vars(klass).get("LIMITS", {}))
        return merged

    @classmethod
    def owner(cls) -> str:
        return cls.OWNER or cls.__name__

    def check(self) -> None:
        """Rules between fields (run once, when built); subclasses raise SSLUserError (``self.refuse``)."""

    def refuse(self, options: str, problem: str, fix: str):
        """The SSLUserError of a rule between fields, named like a limit's."""
        raise SSLUserError(f"{self.owner()} option {options}: {problem}.", fix)

    @classmethod
    def example(cls, name: str, default) -> str:
        """How to set ``name`` right, shown as the fix."""
        if default is MISSING or default is None:
            return f"leave {name} unset for the automatic value, or give a value in the allowed range"
        shown = default if isinstance(default, str) else \
            json.dumps(list(default) if isinstance(default, tuple) else default, separators=(",", ":"))
        return f"e.g. --set {name}={shown} (the default)"

    @classmethod
    def from_dict(cls, values: dict):
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise SSLUserError(f"unknown {cls.owner()} option(s) {unknown}; allowed: {sorted(known)}.",
                               "check the spelling (--set, the schedule options or the recipe)")
        return cls(**values)

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


@dataclass(frozen=True)
class ReadoutConfig(Hyperparameters):
    """The readout options every contrastive method takes (``--set readout=... readout_stages=k``)."""
    # which pooled vector is embedded (blocks/readouts.py). prenorm: the last stage's conv output before
    # its InstanceNorm [measured, hippocampus MLSSCL: largest feature spread and long-short retrieval, weak
    # evidence, docs/methods/readouts.md; PCL's config overrides it]; postnorm: the behaviour before issue 10
    # (earlier checkpoints); multiscale: prenorm of the last readout_stages stages
    readout: str = "prenorm"
    readout_stages: int = 2  # multiscale only [assumption: bottleneck + one finer stage]

    # the upper bound of readout_stages is the encoder's stage count: checked when the method is built
    LIMITS: ClassVar[dict] = {"readout": OneOf(READOUTS), "readout_stages": Range(1)}


@dataclass
class DataGeometry:
    """What a method needs to know about the data to size its patches (preprocessed axis order)."""
    plans_patch_size: list[int]
    divisors: list[int]  # total stride of the encoder per axis: patch sizes must be multiples
    image_shapes: list[list[int]]  # spatial shape of every preprocessed case
    requested_patch_size: list[int] | None = None
    directions: list[list[float]] | None = None  # ITK direction of every case (None: reader gives none)
    transpose_forward: list[int] | None = None  # nnU-Net's axis permutation (plans)


class PretrainingMethod(nn.Module):
    """An encoder (the exact ``network.encoder`` nnU-Net builds from the plans) with method heads.

    Subclasses set ``name`` and ``config_class`` and implement ``make_sampler`` and
    ``training_step``. The loop, the data set-up and checkpoints live in nnunet_ssl.integration.
    """

    name: str = ""
    config_class: type[Hyperparameters] = Hyperparameters
    # False: __init__ gets ``network.encoder``. True: it gets the whole planned U-Net, built with one output
    # channel per input channel and deep supervision off (integration.encoder.build_reconstruction_network)
    needs_full_network: bool = False
    # pretraining schedule values this method starts from (a recipe and command-line options override them)
    schedule_defaults: dict = {}

    def __init__(self, encoder: nn.Module, bottleneck_channels: int, config: Hyperparameters):
        super().__init__()
        self.encoder = encoder
        self.bottleneck_channels = bottleneck_channels
        self.config = config
        kind, stages = getattr(config, "readout", "postnorm"), getattr(config, "readout_stages", 1)
        try:  # the config checked the readout's name; how many stages the encoder has is known only here
            self.readout = Readout(encoder, kind, stages, postnorm_channels=bottleneck_channels)
        except ValueError as e:
            raise SSLUserError(f"{self.name}: {e}.", f"use --set readout=<one of {list(READOUTS)}> and, for "
                               "multiscale, --set readout_stages=k with k at most the encoder's stages") from None
        self.feature_dim = self.readout.out_channels  # what a head on pooled_features takes

    def pooled_features(self, images: torch.Tensor, encoder: nn.Module | None = None) -> torch.Tensor:
        """The vector a method embeds: (B, C_in, *spatial) -> (B, feature_dim), read from ``encoder``
        (default the online encoder; pass a momentum copy of it for target keys) by the configured readout."""
        return self.readout(self.encoder if encoder is None else encoder, images)

    def bottleneck(self, images: torch.Tensor) -> torch.Tensor:
        """The deepest encoder feature map; nnU-Net encoders return all skips."""
        features = self.encoder(images)
        return features[-1] if isinstance(features, (list, tuple)) else features

    def derived_values(self) -> dict:
        """Values computed from config and data (patch size, effective thresholds) to record; subclasses
        extend this dict."""
        return {"readout": self.readout.describe()}

    def make_sampler(self, cases, case_ids: list[str], batch_size: int):
        """A batchgenerators DataLoader yielding this method's batches from nnU-Net's dataset."""
        raise NotImplementedError

    def training_step(self, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        """Return the loss to backpropagate and scalar metrics to log."""
        raise NotImplementedError

    def encoder_images(self, batch: dict) -> torch.Tensor | None:
        """The batch's images as the encoder takes them, (N, C, *patch), for health metrics (stage_redundancy):
        the uncorrupted image or the first view. None where the encoder sees something else (MLSSCL's clips)."""
        return batch.get("image", batch.get("view1"))

    def after_optimizer_step(self, step: int, total_steps: int) -> None:
        """Called after every optimizer step (e.g. a momentum encoder's update); default: nothing."""

    def encoder_loaded(self) -> None:
        """Called after pretrained weights were loaded into ``self.encoder`` from outside the loop (the health
        probe); a method whose target is a momentum copy restarts it from them. Default: nothing."""

    def gradient_clip_norm(self) -> float | None:
        """Clip the global gradient norm to this before each step; None: no clipping."""
        return None

    def wants_preview(self, epoch: int, num_epochs: int) -> bool:
        """Whether to write a preview after this (1-based) epoch; default: never."""
        return False

    def preview(self, batch: dict) -> dict[str, torch.Tensor] | None:
        """Images to show the user, {title: (B, C, *spatial)} (e.g. input, masked input, reconstruction);
        None: nothing to show. Called without gradients on a training batch."""
        return None

    def collapsed_loss(self, global_batch_size: int) -> float | None:
        """The loss of collapsed embeddings (all equal) for this batch size, which a training that
        starts from random weights should stay below; the loop stops a run whose epoch loss rises far
        above it (a diverging learning rate). None: the method gives no such value (no guard)."""
        return None

    def health_warnings(self, epoch_metrics: dict[str, float]) -> list[str]:
        """Warnings from an epoch's mean metrics (e.g. collapse); the loop logs them."""
        return []

    def forward(self, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        # DDP synchronises gradients only for calls that go through forward()
        return self.training_step(batch)
