"""Readouts (blocks/readouts.py) on nnU-Net's encoders: PlainConvUNet and ResidualEncoderUNet, 2D and 3D."""
import copy

import pytest
import torch
from dynamic_network_architectures.architectures.unet import PlainConvUNet, ResidualEncoderUNet
from torch import nn

from nnunet_ssl.blocks.readouts import READOUTS, Readout, global_average_pool, last_main_path_conv

pytestmark = pytest.mark.usefixtures("single_torch_thread")
FEATURES = [4, 8, 16]


def encoder(arch: str, ndim: int, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    conv, norm = (nn.Conv2d, nn.InstanceNorm2d) if ndim == 2 else (nn.Conv3d, nn.InstanceNorm3d)
    common = dict(input_channels=1, n_stages=3, features_per_stage=FEATURES, conv_op=conv, kernel_sizes=3,
                  strides=[[1] * ndim, [2] * ndim, [2] * ndim], num_classes=2, n_conv_per_stage_decoder=1,
                  conv_bias=True, norm_op=norm, norm_op_kwargs={"eps": 1e-5, "affine": True},
                  nonlin=nn.LeakyReLU, nonlin_kwargs={"inplace": True})
    if arch == "plain":
        return PlainConvUNet(n_conv_per_stage=2, **common).encoder
    return ResidualEncoderUNet(n_blocks_per_stage=[1, 2, 2], **common).encoder


def images(ndim: int, batch: int = 3, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, 1, *([8] * ndim), generator=torch.Generator().manual_seed(seed))


def manual_prenorm(enc: nn.Module, x: torch.Tensor, stage: int) -> torch.Tensor:
    """The last stage's conv output written out by hand: every earlier module, then the blocks of that
    stage up to its last main-path conv."""
    if getattr(enc, "stem", None) is not None:
        x = enc.stem(x)
    for s in enc.stages[:stage]:
        x = s(x)
    last = enc.stages[stage]
    if isinstance(last, nn.Sequential):  # PlainConvEncoder: Sequential(StackedConvBlocks)
        last = last[-1]
    if hasattr(last, "convs"):
        for block in last.convs[:-1]:
            x = block(x)
        return last.convs[-1].conv(x)
    for block in last.blocks[:-1]:  # ResidualEncoder: StackedResidualBlocks of BasicBlockD
        x = block(x)
    return last.blocks[-1].conv2.conv(last.blocks[-1].conv1(x))


@pytest.mark.parametrize("arch", ["plain", "residual"])
@pytest.mark.parametrize("ndim", [2, 3])
def test_prenorm_hook_equals_a_manual_forward_up_to_the_conv(arch, ndim):
    enc = encoder(arch, ndim)
    x = images(ndim)
    with torch.no_grad():
        hooked = Readout(enc, "prenorm")(enc, x)
        expected = global_average_pool(manual_prenorm(enc, x, len(enc.stages) - 1))
    assert hooked.shape == (3, FEATURES[-1])
    assert torch.allclose(hooked, expected, atol=1e-6)
    # not the post-norm vector
    assert not torch.allclose(hooked, Readout(enc, "postnorm")(enc, x), atol=1e-3)


@pytest.mark.parametrize("arch", ["plain", "residual"])
def test_multiscale_concatenates_prenorm_of_the_last_k_stages_deepest_first(arch):
    enc = encoder(arch, 3)
    x = images(3)
    with torch.no_grad():
        pooled = Readout(enc, "multiscale", 2)(enc, x)
        expected = torch.cat([global_average_pool(manual_prenorm(enc, x, 2)),
                              global_average_pool(manual_prenorm(enc, x, 1))], dim=1)
    assert pooled.shape == (3, FEATURES[-1] + FEATURES[-2])
    assert torch.allclose(pooled, expected, atol=1e-6)
    assert Readout(enc, "multiscale", 3).out_channels == sum(FEATURES)


def test_residual_readout_hooks_the_conv_before_the_norm_that_precedes_the_residual_sum():
    enc = encoder("residual", 3)
    assert last_main_path_conv(enc.stages[-1]) == "blocks.1.conv2.conv"  # not skip.1.conv
    assert last_main_path_conv(encoder("plain", 3).stages[-1]) == "0.convs.1.conv"


@pytest.mark.parametrize("arch", ["plain", "residual"])
@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("kind", READOUTS)
def test_every_readout_gives_finite_features_and_gradients_reach_the_first_conv(arch, ndim, kind):
    enc = encoder(arch, ndim)
    keys = list(enc.state_dict())
    readout = Readout(enc, kind, 2, postnorm_channels=FEATURES[-1])
    pooled = readout(enc, images(ndim, batch=4))
    assert pooled.shape == (4, readout.out_channels) and torch.isfinite(pooled).all()
    # a loss that depends on how samples differ (the mean over the batch would be flat under InstanceNorm)
    pooled.std(dim=0).sum().backward()
    first = next(m for m in enc.modules() if isinstance(m, nn.modules.conv._ConvNd))
    assert first.weight.grad is not None and first.weight.grad.abs().sum() > 0
    assert list(enc.state_dict()) == keys  # hooks add no parameters or buffers
    assert not any(p.grad is None for n, p in enc.named_parameters() if ".conv." in f".{n}" and "stages.0" in n)


def test_hooks_follow_a_deepcopy_and_keep_no_graph():
    """A momentum target (deepcopy of the online encoder) reads its own convs, not the online ones."""
    online = encoder("plain", 3)
    readout = Readout(online, "prenorm")
    x = images(3)
    readout(online, x)  # registers the hooks
    target = copy.deepcopy(online)  # possible: the captured output was popped (a non-leaf would refuse)
    with torch.no_grad():
        for p in target.get_submodule(readout.conv_paths[0]).parameters():  # the hooked conv only
            p.mul_(1.5)
        a, b = readout(online, x), readout(target, x)
    assert torch.allclose(b, 1.5 * a, rtol=1e-5, atol=1e-6)  # conv output before the norm scales with the weight
    conv = online.get_submodule(readout.conv_paths[0])
    assert not hasattr(conv, "_ssl_readout_output")


def test_bad_readout_options_are_refused():
    enc = encoder("plain", 3)
    with pytest.raises(ValueError, match="unknown readout 'pre'"):
        Readout(enc, "pre")
    with pytest.raises(ValueError, match=r"readout_stages must be an integer in \[1, 3\]"):
        Readout(enc, "multiscale", 4)
