"""Readouts: the pooled vector a contrastive method embeds, taken from an nnU-Net-style encoder.

nnU-Net's encoders end every conv with InstanceNorm (+ LeakyReLU). InstanceNorm gives each channel of
each sample the same spatial mean (beta) and std (|gamma|), so globally pooling a stage's *output*
leaves almost nothing that differs between samples (issue 10: 5% across-sample std at a CPU plan's
bottleneck). The conv output *before* that norm still differs (29% there). Readouts:

- ``postnorm``: global average of the last stage's output (the encoder's last skip): the behaviour
  before readouts existed, kept so earlier results stay reproducible;
- ``prenorm``: global average of the last stage's last main-path conv output, before its norm;
- ``multiscale``: ``prenorm`` of each of the last ``k`` stages, concatenated (coarse to fine order:
  deepest stage first).

Pre-norm features are captured by a forward hook on the conv, so the encoder runs unchanged, every
weight up to that conv gets a gradient and the encoder's ``state_dict`` keys stay the plain ones
(hooks have no parameters). Plain torch; any encoder with ``stages`` (an indexable sequence of
modules, one per resolution) works: dynamic_network_architectures' PlainConvEncoder and
ResidualEncoder, 2D and 3D.
"""
import torch
from torch import nn

READOUTS = ("postnorm", "prenorm", "multiscale")
_SIDE_BRANCHES = ("skip", "squeeze_excitation")  # convs off the main path of residual blocks
_CAPTURED = "_ssl_readout_output"  # attribute the hook writes on the conv module
_HOOKED = "_ssl_readout_hooked"


def global_average_pool(feature_map: torch.Tensor) -> torch.Tensor:
    """(B, C, *spatial) -> (B, C): PCL's AdaptiveAvgPool + Flatten, for 2D and 3D alike."""
    return feature_map.flatten(start_dim=2).mean(dim=2)


def last_main_path_conv(stage: nn.Module) -> str:
    """Name (relative to ``stage``) of the stage's last conv that is not on a residual side branch.

    PlainConvEncoder: ``...convs.N.conv`` (the last ConvDropoutNormReLU); ResidualEncoder: the last
    block's ``conv2.conv`` (BasicBlockD) or ``conv3.conv`` (BottleneckD), the conv whose norm precedes
    the residual sum."""
    names = [name for name, module in stage.named_modules() if isinstance(module, nn.modules.conv._ConvNd)
             and not any(part in _SIDE_BRANCHES for part in name.split("."))]
    if not names:
        raise ValueError(f"no convolution found in encoder stage {type(stage).__name__}")
    return names[-1]


def _conv_path(encoder: nn.Module, stage_index: int) -> str:
    stages = getattr(encoder, "stages", None)
    if stages is None:
        raise ValueError(f"{type(encoder).__name__} has no 'stages': readouts other than postnorm need an "
                         "nnU-Net-style encoder (PlainConvEncoder, ResidualEncoder)")
    index = stage_index % len(stages)
    return f"stages.{index}.{last_main_path_conv(stages[index])}"


def _capture_output(module: nn.Module, inputs, output: torch.Tensor) -> None:
    # a plain function, not a bound method: a deepcopy of the encoder (a momentum target) keeps
    # hooks that write on its own convs
    setattr(module, _CAPTURED, output)


class Readout:
    """The pooled feature vector of an encoder, by readout kind. Holds no parameters and no module:
    call it with the encoder to read (the online one, or a momentum copy of it)."""

    def __init__(self, encoder: nn.Module, kind: str = "prenorm", num_stages: int = 2,
                 postnorm_channels: int | None = None):
        if kind not in READOUTS:
            raise ValueError(f"unknown readout {kind!r}; choose one of {list(READOUTS)}")
        self.kind = kind
        stages = len(getattr(encoder, "stages", ())) or None
        if kind == "multiscale":
            if not isinstance(num_stages, int) or not 1 <= num_stages <= (stages or 0):
                raise ValueError(f"readout_stages must be an integer in [1, {stages}] (the encoder's stages), "
                                 f"got {num_stages!r}")
            self.stage_indices = list(range(-1, -num_stages - 1, -1))  # deepest first
        elif kind == "prenorm":
            self.stage_indices = [-1]
        else:
            self.stage_indices = []
        self.conv_paths = [_conv_path(encoder, i) for i in self.stage_indices]
        if kind == "postnorm":
            channels = postnorm_channels or getattr(encoder, "output_channels", [None])[-1]
            if channels is None:
                raise ValueError("postnorm readout: pass postnorm_channels (the bottleneck's channels)")
            self.out_channels = int(channels)
        else:
            self.out_channels = sum(int(encoder.get_submodule(p).out_channels) for p in self.conv_paths)
            # now, not at the first call: torch.compile (the pretrainer compiles the encoder in place on CUDA,
            # after the method is built) does not notice hooks added to a module after it traced it
            self._hook(encoder)

    def describe(self) -> dict:
        """What the checkpoint metadata records."""
        return {"readout": self.kind, "conv_modules": list(self.conv_paths), "features": self.out_channels}

    def _hook(self, encoder: nn.Module) -> list[nn.Module]:
        convs = [encoder.get_submodule(p) for p in self.conv_paths]
        for conv in convs:
            if not getattr(conv, _HOOKED, False):
                conv.register_forward_hook(_capture_output)
                setattr(conv, _HOOKED, True)
        return convs

    def __call__(self, encoder: nn.Module, images: torch.Tensor) -> torch.Tensor:
        """(B, C_in, *spatial) images -> (B, out_channels) pooled features."""
        if self.kind == "postnorm":
            features = encoder(images)
            features = features[-1] if isinstance(features, (list, tuple)) else features
            return global_average_pool(features)
        convs = self._hook(encoder)
        encoder(images)  # the stages after the hooked conv are cheap (its norm and nonlinearity)
        pooled = []
        for conv in convs:
            output = conv.__dict__.pop(_CAPTURED, None)  # popped: no graph kept alive, deepcopy stays possible
            if output is None:
                raise RuntimeError(f"the readout hook on {type(conv).__name__} did not fire")
            pooled.append(global_average_pool(output))
        return torch.cat(pooled, dim=1) if len(pooled) > 1 else pooled[0]
