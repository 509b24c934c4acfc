"""torch.compile in pretraining: nnU-Net's rule for when, and checkpoints that do not depend on it."""
import copy
import os

import pytest
import torch
from dynamic_network_architectures.architectures.unet import PlainConvUNet
from torch import nn

from nnunet_ssl.integration.pretrainer import compile_wanted


@pytest.mark.parametrize("device, env, expected", [
    ("cuda", {}, os.name != "nt"),  # nnU-Net's default: on
    ("cuda", {"nnUNet_compile": "True"}, os.name != "nt"),
    ("cuda", {"nnUNet_compile": "false"}, False),
    ("cuda", {"nnUNet_compile": "0"}, False),
    ("cpu", {}, False),
    ("cpu", {"nnUNet_compile": "true"}, False),  # nnU-Net never compiles on CPU or MPS
    ("mps", {"nnUNet_compile": "true"}, False),
])
def test_compile_follows_nnunets_rule(device, env, expected):
    assert compile_wanted(torch.device(device), env) is expected


def test_in_place_compile_keeps_the_encoders_keys_and_outputs():
    torch.manual_seed(0)
    encoder = PlainConvUNet(1, 3, [4, 8, 16], nn.Conv3d, 3, [[1, 1, 1], [2, 2, 2], [2, 2, 2]], 2, 2, 2, False,
                            nn.InstanceNorm3d, {"eps": 1e-5, "affine": True}, None, None, nn.LeakyReLU,
                            {"inplace": True}).encoder
    x = torch.randn(2, 1, 8, 16, 16)
    keys, expected = list(encoder.state_dict()), encoder(x)[-1]
    encoder.compile(backend="eager")  # what the pretrainer does on CUDA (with the default backend)
    assert list(encoder.state_dict()) == keys  # no _orig_mod. prefix: checkpoints are the same either way
    assert torch.allclose(encoder(x)[-1], expected)


@pytest.mark.parametrize("kind", ["prenorm", "multiscale"])
def test_hooked_readouts_work_on_an_in_place_compiled_encoder(kind):
    """The pretrainer compiles the encoder in place on CUDA; the readout's hooks must still fire (traced by
    Dynamo here with the eager backend; inductor on a GPU was not run)."""
    from nnunet_ssl.blocks.readouts import Readout
    torch._dynamo.reset()  # Dynamo reuses a graph traced for another encoder instance (and its hooks)
    torch.manual_seed(0)
    encoder = PlainConvUNet(1, 3, [4, 8, 16], nn.Conv3d, 3, [[1, 1, 1], [2, 2, 2], [2, 2, 2]], 2, 2, 2, False,
                            nn.InstanceNorm3d, {"eps": 1e-5, "affine": True}, None, None, nn.LeakyReLU,
                            {"inplace": True}).encoder
    x = torch.randn(2, 1, 8, 16, 16)
    reference = copy.deepcopy(encoder)
    expected = Readout(reference, kind, 2)(reference, x).detach()
    readout = Readout(encoder, kind, 2)  # as in the pretrainer: the method (and its hooks) first, then compile
    encoder.compile(backend="eager")
    for _ in range(2):  # a second call must not see the first call's capture
        pooled = readout(encoder, x)
        assert torch.allclose(pooled, expected, atol=1e-6)
    pooled.std(dim=0).sum().backward()
    assert encoder.stages[0][0].convs[0].conv.weight.grad.abs().sum() > 0
