"""The contract every registered pretraining method keeps, on a tiny nnU-Net encoder and a synthetic batch."""
import json
import math

import pytest
import torch
from dynamic_network_architectures.architectures.unet import PlainConvUNet
from torch import nn

from nnunet_ssl.errors import SSLUserError
from nnunet_ssl.methods import MLSSCL, PCL, DataGeometry, PCLConfig, PretrainingMethod, get_method, list_methods
from nnunet_ssl.methods.base import ReadoutConfig

FEATURES = [4, 8, 16]


pytestmark = pytest.mark.usefixtures("single_torch_thread")
STRIDES = [[1, 1, 1], [2, 2, 2], [2, 2, 2]]


def tiny_network(seed=0, conv_bias=False, outputs=2, deep_supervision=True) -> nn.Module:
    # conv_bias=False: a bias right before InstanceNorm is cancelled by the normalisation, so its gradient is
    # zero by construction and the "every parameter gets a non-zero gradient" check would be meaningless for it
    torch.manual_seed(seed)
    return PlainConvUNet(1, 3, FEATURES, nn.Conv3d, 3, STRIDES, 2, outputs, 2, conv_bias, nn.InstanceNorm3d,
                         {"eps": 1e-5, "affine": True}, None, None, nn.LeakyReLU, {"inplace": True},
                         deep_supervision=deep_supervision)


def tiny_encoder(seed=0, conv_bias=False) -> nn.Module:
    return tiny_network(seed, conv_bias).encoder


def tiny_input(method_class, seed=0, conv_bias=False) -> nn.Module:
    """What a method's __init__ takes: the encoder, or for full-network methods the whole U-Net as the
    pretrainer builds it (one output per input channel, deep supervision off)."""
    if method_class.needs_full_network:
        return tiny_network(seed, conv_bias, outputs=1, deep_supervision=False)
    return tiny_encoder(seed, conv_bias)


# per-method settings for the generic tests: MoCo's queue holds one batch, so that every step has the same
# number of negatives and "the loss falls on a fixed batch" is not swamped by the queue filling up
CONTRACT_CONFIG = {"moco": {"queue_size": 4}}


def geometry(**overrides) -> DataGeometry:
    values = dict(plans_patch_size=[16, 32, 32], divisors=[4, 4, 4], image_shapes=[[40, 40, 40]] * 5)
    values.update(overrides)
    return DataGeometry(**values)


def build(name, seed=0, conv_bias=False, **config) -> PretrainingMethod:
    method_class = get_method(name)
    config = {**CONTRACT_CONFIG.get(name, {}), **config}
    return method_class(tiny_input(method_class, seed, conv_bias), FEATURES[-1], method_class.config_class(**config),
                        geometry())


def synthetic_batch(seed=0, method=None) -> dict:
    g = torch.Generator().manual_seed(seed)
    if isinstance(method, MLSSCL):  # four clips of the method's clip shape
        from nnunet_ssl.data.clip_sampler import CLIP_KEYS
        return {k: torch.randn(4, 1, *method.clip_shape, generator=g) for k in CLIP_KEYS}
    if method is not None and method.needs_full_network:  # a target and a changed copy of it
        image = torch.randn(4, 1, 16, 32, 32, generator=g)
        return {"image": image, "corrupted": image + torch.randn(image.shape, generator=g)}
    return {"view1": torch.randn(4, 1, 16, 32, 32, generator=g),
            "view2": torch.randn(4, 1, 16, 32, 32, generator=g),
            "positions": torch.tensor([0.2, 0.23, 0.5, 0.8])}


def test_registry():
    names = list_methods()
    assert names == sorted(names) and "pcl" in names
    for name in names:
        assert get_method(name).name == name
        assert issubclass(get_method(name), PretrainingMethod)
    with pytest.raises(ValueError):
        get_method("no-such-method")


@pytest.mark.parametrize("name", list_methods())
def test_training_step_gives_finite_loss_metrics_and_gradients(name):
    method = build(name)
    method.train()
    loss, metrics = method.training_step(synthetic_batch(method=method))
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert "loss" in metrics and metrics["loss"] == pytest.approx(loss.item())
    if issubclass(get_method(name), PCL):
        assert "positive_fraction" in metrics and 0.0 <= metrics["positive_fraction"] <= 1.0
    assert all(isinstance(v, float) and math.isfinite(v) for v in metrics.values())
    loss.backward()
    named = [(n, p) for n, p in method.named_parameters() if p.requires_grad]  # a momentum target is frozen
    assert any(n.startswith("encoder.") for n, _ in named)
    if not issubclass(method.config_class, ReadoutConfig):  # reconstruction: the whole network, no readout
        for param_name, param in named:
            assert param.grad is not None and torch.isfinite(param.grad).all(), f"{param_name} gets no gradient"
        return
    # the default pre-norm readout reads the last conv before its norm: only that norm's affine parameters
    # are outside the loss
    assert method.readout.kind != "postnorm"
    last_norm = "encoder." + method.readout.conv_paths[0].removesuffix(".conv") + ".norm."
    after_readout = [n for n, _ in named if n.startswith(last_norm)]
    assert len(after_readout) == 2 and all(dict(named)[n].grad is None for n in after_readout)
    for param_name, param in [(n, p) for n, p in named if n not in after_readout]:
        assert param.grad is not None, f"{param_name} gets no gradient"
        assert torch.isfinite(param.grad).all(), param_name
        assert param.grad.abs().sum() > 0, f"{param_name} has an all-zero gradient"


@pytest.mark.parametrize("name", list_methods())
def test_encoder_images_feed_the_encoder_for_the_redundancy_metric(name):
    from nnunet_ssl.blocks.health import stage_redundancy
    method = build(name)
    images = method.encoder_images(synthetic_batch(method=method))
    if name.startswith("mlsscl"):  # clips, not images the planned encoder takes
        assert images is None
        return
    redundancy = stage_redundancy(method.encoder, images)
    assert len(redundancy) == len(FEATURES) and all(0 <= r <= 1 for r in redundancy)


# the methods that embed a pooled vector (a ReadoutConfig); reconstruction methods train the whole network
READOUT_METHODS = [n for n in list_methods() if issubclass(get_method(n).config_class, ReadoutConfig)]


@pytest.mark.parametrize("name", READOUT_METHODS)
@pytest.mark.parametrize("readout,features", [("postnorm", 16), ("prenorm", 16), ("multiscale", 24)])
def test_every_method_takes_every_readout(name, readout, features):
    method = build(name, readout=readout, readout_stages=2)
    assert method.feature_dim == features and method.projector[0].in_features == features
    assert method.derived_values()["readout"]["readout"] == readout
    method.train()
    loss, metrics = method.training_step(synthetic_batch(method=method))
    assert torch.isfinite(loss)
    assert 0 < metrics["top1_chance"] < 1
    if name != "byol":  # BYOL has no negatives: its loss of collapsed embeddings is 0, no collapse value
        assert metrics["loss_collapse"] > 0
    loss.backward()
    first_conv = method.encoder.stages[0][0].convs[0].conv.weight
    assert first_conv.grad is not None and first_conv.grad.abs().sum() > 0


def test_a_bad_readout_is_a_user_error():
    with pytest.raises(SSLUserError, match="option readout = 'pre': must be one of 'postnorm', 'prenorm'"):
        build("pcl", readout="pre")  # when the config is built, before the method (and the data)
    with pytest.raises(SSLUserError, match="readout_stages"):
        build("mlsscl", readout="multiscale", readout_stages=9)


@pytest.mark.parametrize("name", list_methods())
def test_encoder_is_the_one_passed_in(name):
    method_class = get_method(name)
    given = tiny_input(method_class)
    encoder = given.encoder if method_class.needs_full_network else given
    method = method_class(given, FEATURES[-1], method_class.config_class(), geometry())
    assert method.encoder is encoder
    assert set(f"encoder.{k}" for k in encoder.state_dict()) <= set(method.state_dict())
    derived = method.derived_values()
    assert isinstance(derived, dict)
    assert json.loads(json.dumps(derived)) == derived  # recorded in the checkpoint metadata as plain JSON
    assert json.loads(json.dumps(method.config.to_dict())) == method.config.to_dict()


@pytest.mark.parametrize("name", list_methods())
def test_a_few_sgd_steps_lower_the_loss_on_a_fixed_batch(name):
    method = build(name, seed=1)
    method.train()
    batch = synthetic_batch(seed=1, method=method)
    optimizer = torch.optim.SGD(method.parameters(), lr=0.05, momentum=0.9)
    losses = []
    for _ in range(10):
        loss, _ = method.training_step(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    with torch.no_grad():
        final, _ = method.training_step(batch)
    assert all(math.isfinite(v) for v in losses)
    assert final.item() < losses[0]


# --- PCL specifics ---------------------------------------------------------------------------------------------

def test_pcl_positive_fraction_metric_for_known_positions():
    method = build("pcl")
    assert method.threshold == pytest.approx(0.06)
    # positions 0.2 and 0.23 are within 0.06, the rest are not; with both views: 8 patches,
    # positives off the diagonal: each sample's other view (8) + 0.2<->0.23 across views (2 * 2 * 2 = 8) -> 16 / 56
    _, metrics = method.training_step(synthetic_batch())
    assert metrics["positive_fraction"] == pytest.approx(16 / 56)


def test_pcl_effective_threshold_is_theta_times_one_minus_h():
    # auto patch: [16, 32, 32] stays (limit 0.5 * 40 = 20 -> 20), h = 16 / 40
    method = PCL(tiny_encoder(), FEATURES[-1], PCLConfig(theta=0.1), geometry())
    assert method.patch_size == [16, 32, 32]
    assert method.fraction == pytest.approx(0.4)
    assert method.threshold == pytest.approx(0.1 * (1 - 0.4))
    derived = method.derived_values()
    assert derived == {"patch_size": [16, 32, 32], "patch_fraction": pytest.approx(0.4),
                       "effective_theta": pytest.approx(0.06), "position_axis": 0,
                       "readout": method.readout.describe()}
    assert derived["readout"] == {"readout": "multiscale", "conv_modules": ["stages.2.0.convs.1.conv",
                                                                            "stages.1.0.convs.1.conv"], "features": 24}

    shapes = [[50, 40, 40], [60, 40, 40], [70, 40, 40]]
    method = PCL(tiny_encoder(), FEATURES[-1], PCLConfig(theta=0.2),
                 geometry(plans_patch_size=[48, 32, 32], image_shapes=shapes))
    # median 60 -> limit 0.5 * 60 = 30 -> 28 (multiple of 4); h = 28 / 60
    assert method.patch_size == [28, 32, 32]
    assert method.threshold == pytest.approx(0.2 * (1 - 28 / 60))

    method = PCL(tiny_encoder(), FEATURES[-1], PCLConfig(theta=0.1, rescale_theta=False), geometry())
    assert method.threshold == 0.1


def test_pcl_uses_a_requested_patch_size():
    method = PCL(tiny_encoder(), FEATURES[-1], PCLConfig(), geometry(requested_patch_size=[24, 32, 32]))
    assert method.patch_size == [24, 32, 32]
    assert method.fraction == pytest.approx(0.6)
    assert method.threshold == pytest.approx(0.1 * 0.4)


@pytest.mark.parametrize("patch0", [32, 36, 40, 48])
def test_pcl_refuses_patches_covering_80_percent_of_the_position_axis(patch0):
    with pytest.raises(SSLUserError) as excinfo:
        PCL(tiny_encoder(), FEATURES[-1], PCLConfig(), geometry(requested_patch_size=[patch0, 32, 32]))
    assert excinfo.value.fix
    assert "axis 0" in excinfo.value.problem


def test_pcl_accepts_a_patch_just_below_80_percent():
    method = PCL(tiny_encoder(), FEATURES[-1], PCLConfig(), geometry(requested_patch_size=[28, 32, 32]))
    assert method.fraction == pytest.approx(0.7)


def test_pcl_position_axis_selects_the_axis():
    shapes = [[40, 100, 40]] * 3
    method = PCL(tiny_encoder(), FEATURES[-1], PCLConfig(position_axis=1),
                 geometry(plans_patch_size=[16, 64, 32], image_shapes=shapes))
    assert method.patch_size == [16, 48, 32]  # only axis 1 is shortened: 0.5 * 100 = 50 -> 48
    assert method.fraction == pytest.approx(0.48)
    with pytest.raises(SSLUserError):
        PCL(tiny_encoder(), FEATURES[-1], PCLConfig(position_axis=3), geometry())


def test_pcl_config_round_trip():
    config = PCLConfig.from_dict({"theta": 0.2, "scaling": (0.8, 1.2)})
    assert config.theta == 0.2
    assert config.to_dict()["scaling"] == [0.8, 1.2]
    with pytest.raises(SSLUserError, match=r"unknown pcl/simclr/gcl option\(s\) \['thetaa'\]"):
        PCLConfig.from_dict({"thetaa": 0.2})
