"""Loading a pretrained encoder into nnU-Net's U-Nets (PlainConvUNet, ResidualEncoderUNet)."""
import pytest
import torch
import torch.nn.functional as F
from dynamic_network_architectures.architectures.unet import PlainConvUNet, ResidualEncoderUNet
from torch import nn

from nnunet_ssl.errors import SSLUserError
from nnunet_ssl.integration.checkpoint import SSLCheckpointMeta, save_encoder_checkpoint
from nnunet_ssl.blocks.health import weight_scale_ratios
from nnunet_ssl.integration.encoder_loader import (LoadReport, adapt_input_channels, convs_before_instance_norm,
                                                   encoder_mismatches, input_projection_keys, load_pretrained_encoder,
                                                   strip_wrapper_prefixes, unwrap)

STRIDES = [[1, 1, 1], [2, 2, 2], [2, 2, 2]]
COMMON = dict(n_stages=3, conv_op=nn.Conv3d, kernel_sizes=3, strides=STRIDES, num_classes=2,
              n_conv_per_stage_decoder=1, conv_bias=True, norm_op=nn.InstanceNorm3d,
              norm_op_kwargs={"eps": 1e-5, "affine": True}, nonlin=nn.LeakyReLU, nonlin_kwargs={"inplace": True},
              deep_supervision=True)


def plain_unet(seed, features=(4, 8, 16), channels=1):
    torch.manual_seed(seed)
    return PlainConvUNet(input_channels=channels, features_per_stage=list(features), n_conv_per_stage=2, **COMMON)


def residual_unet(seed, features=(4, 8, 16), channels=1):
    torch.manual_seed(seed)
    return ResidualEncoderUNet(input_channels=channels, features_per_stage=list(features),
                               n_blocks_per_stage=[1, 1, 1], **COMMON)


BUILDERS = {"PlainConvUNet": plain_unet, "ResidualEncoderUNet": residual_unet}


def make_meta() -> SSLCheckpointMeta:
    return SSLCheckpointMeta(method="pcl", hparams={"theta": 0.1}, dataset_name="Dataset001_X",
                             plans_identifier="nnUNetPlans", configuration="3d_fullres", architecture_hash="0" * 64,
                             architecture={"network_class_name": "x"}, num_input_channels=1,
                             channel_names={"0": "CT"}, normalization_schemes=["CTNormalization"], seed=0,
                             case_ids=["a", "b", "c"], epochs_completed=3)


def perturbed_encoder_state(network) -> dict:
    """The encoder's state dict after random changes to every parameter and float buffer."""
    with torch.no_grad():
        g = torch.Generator().manual_seed(123)
        for p in network.encoder.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.5 + 1.0)
        for b in network.encoder.buffers():
            if b.is_floating_point():
                b.add_(torch.rand(b.shape, generator=g) + 0.5)
    return {k: v.clone() for k, v in network.encoder.state_dict().items()}


def save(tmp_path, state, name="checkpoint_final.pth", health=None) -> str:
    path = str(tmp_path / name)
    meta = make_meta()
    meta.health = health or {}
    save_encoder_checkpoint(path, state, meta)
    return path


@pytest.mark.parametrize("arch", sorted(BUILDERS))
def test_load_replaces_encoder_and_keeps_decoder(tmp_path, arch):
    build = BUILDERS[arch]
    saved = perturbed_encoder_state(build(seed=0))
    path = save(tmp_path, saved)

    fresh = build(seed=1)
    before = {k: v.clone() for k, v in fresh.state_dict().items()}
    assert any(not torch.equal(before[f"encoder.{k}"], v) for k, v in saved.items())  # the test is meaningful

    report = load_pretrained_encoder(fresh, path, rescale=False)  # exact copy; rescaling: test_rescale_*

    after = fresh.state_dict()
    assert set(after) == set(before)
    for key, value in saved.items():
        assert torch.equal(after[f"encoder.{key}"], value), key
    aliases = [k for k in after if k.startswith("decoder.encoder.")]
    assert aliases, "nnU-Net's decoders keep a reference to the encoder"
    for key in aliases:
        assert torch.equal(after[key], saved[key[len("decoder.encoder."):]]), key
    decoder_only = [k for k in after if k.startswith("decoder.") and not k.startswith("decoder.encoder.")]
    assert decoder_only
    for key in decoder_only:
        assert torch.equal(after[key], before[key]), key
    # nothing outside encoder/decoder either
    for key in after:
        if not key.startswith(("encoder.", "decoder.")):
            assert torch.equal(after[key], before[key]), key

    assert isinstance(report, LoadReport)
    assert report.path == path
    assert report.loaded == _distinct(fresh.encoder.state_dict()) < len(saved)  # aliases counted once
    assert report.meta.method == "pcl" and report.meta.case_ids == ["a", "b", "c"]
    summary = report.summary()
    assert path in summary and f"({report.loaded} tensors)" in summary and "3 cases" in summary


@pytest.mark.parametrize("arch", sorted(BUILDERS))
def test_loaded_network_computes_like_the_source_encoder(tmp_path, arch):
    build = BUILDERS[arch]
    source = build(seed=0)
    path = save(tmp_path, perturbed_encoder_state(source))
    fresh = build(seed=1)
    load_pretrained_encoder(fresh, path, rescale=False)  # exact copy; rescaling: test_rescale_*
    x = torch.randn(1, 1, 8, 8, 8, generator=torch.Generator().manual_seed(0))
    source.eval(), fresh.eval()
    with torch.no_grad():
        for a, b in zip(source.encoder(x), fresh.encoder(x)):
            assert torch.equal(a, b)


@pytest.mark.parametrize("prefix", ["module.", "_orig_mod.", "module._orig_mod.", "_orig_mod.module."])
def test_wrapper_prefixes_are_stripped(tmp_path, prefix):
    saved = perturbed_encoder_state(plain_unet(seed=0))
    path = save(tmp_path, {prefix + k: v for k, v in saved.items()})
    fresh = plain_unet(seed=1)
    report = load_pretrained_encoder(fresh, path, rescale=False)  # exact copy; rescaling: test_rescale_*
    assert report.loaded == _distinct(fresh.encoder.state_dict())
    for key, value in fresh.encoder.state_dict().items():
        assert torch.equal(value, saved[key]), key


def test_strip_wrapper_prefixes_only_touches_leading_prefixes():
    state = {"module.a.module.b": 1, "_orig_mod.module.c": 2, "d.module.e": 3, "modules.x": 4}
    assert strip_wrapper_prefixes(state) == {"a.module.b": 1, "c": 2, "d.module.e": 3, "modules.x": 4}


def test_architecture_mismatch_lists_offending_keys(tmp_path):
    saved = perturbed_encoder_state(plain_unet(seed=0, features=(8, 16, 32)))
    path = save(tmp_path, saved)
    fresh = plain_unet(seed=1)
    before = {k: v.clone() for k, v in fresh.state_dict().items()}
    with pytest.raises(SSLUserError) as excinfo:
        load_pretrained_encoder(fresh, path)
    error = excinfo.value
    assert path in error.problem
    assert "stages.0.0.convs.0.conv.weight" in error.problem
    assert "(8, 1, 3, 3, 3) in checkpoint vs (4, 1, 3, 3, 3) here" in error.problem
    assert "... and" in error.problem  # more than 10 offending keys: the rest are counted
    assert error.fix
    for key, value in fresh.state_dict().items():  # nothing was loaded
        assert torch.equal(value, before[key]), key


def test_other_architecture_class_lists_missing_and_unexpected_keys(tmp_path):
    saved = perturbed_encoder_state(residual_unet(seed=0))
    path = save(tmp_path, saved)
    target = plain_unet(seed=1)
    n_problems = len(encoder_mismatches(target.encoder.state_dict(), saved))
    assert n_problems > 10
    with pytest.raises(SSLUserError) as excinfo:
        load_pretrained_encoder(target, path)
    problem = excinfo.value.problem
    assert "missing in checkpoint: stages.0.0.convs.0.conv.weight" in problem  # the first 10 are shown
    assert f"... and {n_problems - 10} more" in problem  # the rest (e.g. 'not in this network: stem...') counted
    assert excinfo.value.fix


def test_encoder_mismatches_reports_every_kind():
    target = {"a": torch.zeros(2), "b": torch.zeros(3), "c": torch.zeros(1)}
    source = {"a": torch.zeros(2), "b": torch.zeros(4), "d": torch.zeros(1)}
    problems = encoder_mismatches(target, source)
    assert problems == ["missing in checkpoint: c", "not in this network: d",
                        "shape (4,) in checkpoint vs (3,) here: b"]
    assert encoder_mismatches(target, dict(target)) == []


def test_missing_checkpoint_is_a_user_error(tmp_path):
    with pytest.raises(SSLUserError):
        load_pretrained_encoder(plain_unet(seed=0), str(tmp_path / "missing.pth"))


class _Wrapper(nn.Module):
    """Like DistributedDataParallel: the real network is ``.module``."""

    def __init__(self, module):
        super().__init__()
        self.module = module


class _Compiled(nn.Module):
    """Like torch.compile's OptimizedModule: the real network is ``._orig_mod``."""

    def __init__(self, module):
        super().__init__()
        self._orig_mod = module


def test_unwrap():
    net = plain_unet(seed=0)
    assert unwrap(net) is net
    assert unwrap(torch.nn.DataParallel(net)) is net
    assert unwrap(_Wrapper(net)) is net
    assert unwrap(_Compiled(net)) is net
    assert unwrap(_Wrapper(_Compiled(net))) is net
    assert unwrap(_Compiled(_Wrapper(_Wrapper(net)))) is net


@pytest.mark.parametrize("wrap", [torch.nn.DataParallel, _Wrapper, _Compiled], ids=["DataParallel", "ddp", "compile"])
def test_load_into_wrapped_network(tmp_path, wrap):
    saved = perturbed_encoder_state(plain_unet(seed=0))
    path = save(tmp_path, saved)
    inner = plain_unet(seed=1)
    report = load_pretrained_encoder(wrap(inner), path, rescale=False)  # exact copy; rescaling: test_rescale_*
    assert report.loaded == _distinct(inner.encoder.state_dict())
    for key, value in inner.encoder.state_dict().items():
        assert torch.equal(value, saved[key]), key


def _distinct(state_dict: dict) -> int:
    """Number of distinct tensors (nnU-Net conv blocks expose each twice: conv / all_modules.N)."""
    return len({v.data_ptr() for v in state_dict.values()})


# --- input-channel adaptation ---------------------------------------------------------------------------------------

# the input projection of each architecture: (weight key, its all_modules alias), relative to network.encoder
STEM_KEYS = {"PlainConvUNet": ("stages.0.0.convs.0.conv.weight", "stages.0.0.convs.0.all_modules.0.weight"),
             "ResidualEncoderUNet": ("stem.convs.0.conv.weight", "stem.convs.0.all_modules.0.weight")}


def _constant_response(weight: torch.Tensor, value: float = 1.7) -> torch.Tensor:
    """Pre-activation response of a conv (zero padding, so borders count too) to a constant image."""
    conv = {3: F.conv1d, 4: F.conv2d, 5: F.conv3d}[weight.dim()]
    x = torch.full((1, weight.shape[1]) + (5,) * (weight.dim() - 2), value, dtype=weight.dtype)
    return conv(x, weight, padding=weight.shape[-1] // 2)


@pytest.mark.parametrize("n, m", [(1, 1), (1, 2), (1, 4), (2, 1), (3, 1), (2, 3), (3, 2), (4, 4)])
@pytest.mark.parametrize("kernel", [(3, 3, 3), (3, 3), (1, 3, 3)])
def test_adapt_input_channels_keeps_the_response_to_a_constant_image(n, m, kernel):
    weight = torch.randn((6, n) + kernel, generator=torch.Generator().manual_seed(n * 10 + m), dtype=torch.float64)
    original = weight.clone()
    adapted = adapt_input_channels(weight, m)
    assert adapted.shape == (6, m) + kernel and adapted.dtype == weight.dtype
    assert torch.equal(weight, original)  # pure: the input is not modified
    torch.testing.assert_close(_constant_response(adapted), _constant_response(weight))


def test_adapt_input_channels_rules():
    w = torch.randn(4, 1, 3, 3, 3)
    up = adapt_input_channels(w, 3)  # 1 -> N: repeated, divided by N
    for c in range(3):
        torch.testing.assert_close(up[:, c:c + 1], w / 3)
    w3 = torch.randn(4, 3, 3, 3, 3)
    torch.testing.assert_close(adapt_input_channels(w3, 1), w3.sum(1, keepdim=True))  # N -> 1: summed
    general = adapt_input_channels(w3, 2)  # N -> M fallback: channel mean times N/M on every new channel
    for c in range(2):
        torch.testing.assert_close(general[:, c:c + 1], w3.mean(1, keepdim=True) * 3 / 2)
    same = adapt_input_channels(w3, 3)  # N -> N: unchanged copy
    assert torch.equal(same, w3) and same.data_ptr() != w3.data_ptr()


@pytest.mark.parametrize("weight, channels", [(torch.zeros(4, 2), 1), (torch.zeros(4, 1, 3), 0)])
def test_adapt_input_channels_rejects_bad_input(weight, channels):
    with pytest.raises(ValueError):
        adapt_input_channels(weight, channels)


@pytest.mark.parametrize("arch", sorted(BUILDERS))
def test_input_projection_keys_group_the_aliases_and_fall_back_to_the_first_conv(arch):
    net = BUILDERS[arch](seed=0)
    state = net.encoder.state_dict()
    assert input_projection_keys(net, state) == [list(STEM_KEYS[arch])]
    del net.keys_to_in_proj  # an architecture that does not declare its input projection
    assert input_projection_keys(net, state) == [list(STEM_KEYS[arch])]


@pytest.mark.parametrize("n, m", [(1, 1), (1, 2), (2, 1), (2, 3)])
@pytest.mark.parametrize("arch", sorted(BUILDERS))
def test_load_adapts_input_channels(tmp_path, arch, n, m):
    build = BUILDERS[arch]
    source = build(seed=0, channels=n)
    saved = perturbed_encoder_state(source)
    path = save(tmp_path, saved)
    fresh = build(seed=1, channels=m)
    before = {k: v.clone() for k, v in fresh.state_dict().items()}

    report = load_pretrained_encoder(fresh, path, rescale=False)  # exact copy; rescaling: test_rescale_*

    stem, alias = STEM_KEYS[arch]
    expected_stem = adapt_input_channels(saved[stem], m)
    after = fresh.state_dict()
    for key, value in saved.items():
        if key in (stem, alias):
            assert torch.equal(after[f"encoder.{key}"], expected_stem), key
        else:
            assert torch.equal(after[f"encoder.{key}"], value), key
    aliases = [k for k in after if k.startswith("decoder.encoder.")]
    assert aliases
    for key in aliases:
        assert torch.equal(after[key], after[key[len("decoder."):]]), key
    for key in after:
        if not key.startswith(("encoder.", "decoder.encoder.")):
            assert torch.equal(after[key], before[key]), key  # decoder and heads untouched

    if n == m:
        assert report.adapted == [] and "adapted" not in report.summary()
    else:
        assert report.adapted == [f"{stem}: from {n} to {m} channels"]
        assert report.adapted[0] in report.summary()
    assert report.loaded == _distinct(fresh.encoder.state_dict())

    # the stem's pre-activation response to a constant image is the pretrained one
    with torch.no_grad():
        torch.testing.assert_close(_constant_response(fresh.encoder.get_parameter(stem)),
                                   _constant_response(source.encoder.get_parameter(stem)))
        fresh.eval()
        assert fresh(torch.randn(1, m, 8, 8, 8))[0].shape == (1, 2, 8, 8, 8)  # deep supervision: a list


@pytest.mark.parametrize("arch", sorted(BUILDERS))
def test_other_mismatch_is_refused_even_when_channels_differ_too(tmp_path, arch):
    build = BUILDERS[arch]
    path = save(tmp_path, perturbed_encoder_state(build(seed=0, features=(8, 16, 32), channels=1)))
    fresh = build(seed=1, channels=2)
    before = {k: v.clone() for k, v in fresh.state_dict().items()}
    with pytest.raises(SSLUserError) as excinfo:
        load_pretrained_encoder(fresh, path)
    problem = excinfo.value.problem
    stem = STEM_KEYS[arch][0]
    assert f"(8, 1, 3, 3, 3) in checkpoint vs (4, 2, 3, 3, 3) here: {stem}" in problem
    assert "... and" in problem
    for key, value in fresh.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_summary_reads_well_in_the_training_log(tmp_path):
    path = save(tmp_path, perturbed_encoder_state(plain_unet(seed=0)))
    report = load_pretrained_encoder(plain_unet(seed=1, channels=2), path)
    summary = report.summary()
    assert summary.splitlines()[0] == f"loaded pretrained encoder ({report.loaded} tensors) from {path}"
    assert "method pcl" in summary and "Dataset001_X / nnUNetPlans / 3d_fullres" in summary
    assert "stages.0.0.convs.0.conv.weight: from 1 to 2 channels" in summary


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("arch", sorted(BUILDERS))
def test_load_into_a_network_on_cuda(tmp_path, arch):
    build = BUILDERS[arch]
    saved = perturbed_encoder_state(build(seed=0))
    path = save(tmp_path, saved)
    fresh = build(seed=1, channels=2).cuda()
    report = load_pretrained_encoder(fresh, path, rescale=False)  # exact copy; rescaling: test_rescale_*
    assert report.adapted
    stem = STEM_KEYS[arch][0]
    for key, value in fresh.encoder.state_dict().items():
        assert value.device.type == "cuda", key
        expected = adapt_input_channels(saved[key], 2) if key in STEM_KEYS[arch] else saved[key]
        assert torch.equal(value.cpu(), expected), key
    assert fresh.encoder.get_parameter(stem).is_cuda


# --- no silent harm: weight scale and pretraining health (issue 10, item 6) ------------------------------------

def grown_encoder_state(network, factor=5.0) -> dict:
    """Like a contrastive pretraining: weights grown to ``factor`` x their He-init size, norms changed."""
    perturbed_encoder_state(network)
    with torch.no_grad():
        for conv in convs_before_instance_norm(network.encoder)[0].values():
            he = (2 / (1 + 1e-4) / conv.weight[0].numel()) ** 0.5
            conv.weight.copy_(torch.randn(conv.weight.shape, generator=torch.Generator().manual_seed(7)) * factor * he)
    return {k: v.clone() for k, v in network.encoder.state_dict().items()}


@pytest.mark.parametrize("arch", sorted(BUILDERS))
def test_rescale_restores_he_std_and_keeps_the_function(tmp_path, arch):
    build = BUILDERS[arch]
    path = save(tmp_path, grown_encoder_state(build(seed=0)))
    exact, rescaled = build(seed=1), build(seed=1)
    load_pretrained_encoder(exact, path, rescale=False)
    report = load_pretrained_encoder(rescaled, path)  # the default
    convs = convs_before_instance_norm(rescaled.encoder)[0]
    assert convs and set(report.rescaled) == set(convs)  # every encoder conv of these nets feeds InstanceNorm
    assert all(4.0 < r < 6.0 for r in report.rescaled.values())  # reported: the std before, against He
    ratios = weight_scale_ratios(rescaled.encoder)
    assert all(ratios[name] == pytest.approx(1.0, rel=1e-4) for name in convs)
    x = torch.randn(2, 1, 8, 8, 8, generator=torch.Generator().manual_seed(0))
    exact.eval(), rescaled.eval()
    with torch.no_grad():
        for a, b in zip(exact.encoder(x), rescaled.encoder(x)):
            assert torch.allclose(a, b, atol=1e-4, rtol=1e-4)  # up to InstanceNorm's eps
    assert "rescaled to nnU-Net's He-init std" in report.summary() and "nnUNet_ssl_keep_weight_scale=1" in \
        report.summary()


def test_rescale_opt_out_keeps_the_pretrained_scale(tmp_path):
    saved = grown_encoder_state(plain_unet(seed=0))
    path = save(tmp_path, saved)
    network = plain_unet(seed=1)
    report = load_pretrained_encoder(network, path, environ={"nnUNet_ssl_keep_weight_scale": "1"})
    assert report.rescale_disabled and not report.rescaled
    assert all(torch.equal(network.encoder.state_dict()[k], v) for k, v in saved.items())
    assert "weight scale kept as pretrained" in report.summary()


def test_a_checkpoint_without_learning_is_refused_unless_allowed(tmp_path):
    health = {"verdict": "no_learning", "reason": "loss 4.880 = 0.995 x its collapse value 4.906"}
    path = save(tmp_path, perturbed_encoder_state(plain_unet(seed=0)), health=health)
    with pytest.raises(SSLUserError) as refused:
        load_pretrained_encoder(plain_unet(seed=1), path, environ={})
    assert "shows no learning: loss 4.880 = 0.995 x its collapse value" in refused.value.problem
    assert "nnUNet_ssl_allow_unhealthy=1" in refused.value.fix
    report = load_pretrained_encoder(plain_unet(seed=1), path, environ={"nnUNet_ssl_allow_unhealthy": "1"})
    assert "pretraining health: no_learning" in report.summary()
    learned = save(tmp_path, perturbed_encoder_state(plain_unet(seed=0)), "learned.pth",
                   health={"verdict": "learned", "reason": "loss 3.3"})
    load_pretrained_encoder(plain_unet(seed=1), learned, environ={})  # accepted


@pytest.mark.parametrize("rescale", [False, True])
@pytest.mark.parametrize("arch", sorted(BUILDERS))
def test_fresh_first_stage_keeps_the_random_first_stage_and_loads_the_rest(tmp_path, arch, rescale):
    from nnunet_ssl.integration.encoder_loader import first_stage_keys
    from nnunet_ssl.integration.trainers.registry import trainer_class
    build = BUILDERS[arch]
    saved = perturbed_encoder_state(build(seed=0))
    path = save(tmp_path, saved)
    fresh = build(seed=1)
    before = {k: v.clone() for k, v in fresh.encoder.state_dict().items()}
    first = first_stage_keys(before)
    assert first and all(k.startswith(("stages.0.", "stem.")) for k in first)
    assert (arch == "ResidualEncoderUNet") == any(k.startswith("stem.") for k in first)

    cls = trainer_class("SSLInitTrainer_freshFirstStage_cpu500it")
    report = (cls.load_pretrained(fresh, path) if rescale
              else load_pretrained_encoder(fresh, path, rescale=False, fresh_first_stage=True))

    after = fresh.encoder.state_dict()
    for key in before:
        if key in first:
            assert torch.equal(after[key], before[key]), key  # exactly the random init, also after a rescale
        elif not rescale:
            assert torch.equal(after[key], saved[key]), key
    rest = [k for k in before if k not in first and k.endswith("norm.bias")]
    assert rest and all(torch.equal(after[k], saved[k]) for k in rest)  # norms are never rescaled
    assert report.fresh_first_stage == first
    assert report.loaded == _distinct(after) - _distinct({k: after[k] for k in first})
    assert not any(name.startswith(("stages.0.", "stem.")) for name in report.rescaled)
    assert "first stage kept at its random init" in report.summary()


def test_the_load_report_shows_the_first_stage_redundancy_the_pretraining_ended_with(tmp_path):
    state = perturbed_encoder_state(plain_unet(seed=0))
    meta = make_meta()
    meta.final_metrics = {"loss": 0.5, "stage0_redundancy": 0.6912}
    path = str(tmp_path / "checkpoint_final.pth")
    save_encoder_checkpoint(path, state, meta)
    summary = load_pretrained_encoder(plain_unet(seed=1), path).summary()
    assert "first-stage channel redundancy at the end of pretraining: 0.69" in summary
    assert "redundancy" not in load_pretrained_encoder(plain_unet(seed=1), save(tmp_path, state, "old.pth")).summary()
