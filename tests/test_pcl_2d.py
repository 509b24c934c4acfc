"""PCL in nnU-Net's 2d configuration (the faithful port, spec 3.2): slice position label, slice
sampling, the reference's batchgenerators v1 views, the method on a 2D encoder, and one run
through nnUNetv2_ssl_pretrain -c 2d and nnUNetv2_train 2d."""
import json
import os
import subprocess

import numpy as np
import pytest
import torch
from batchgenerators.transforms import spatial_transforms as v1_spatial
from conftest import DATASET_ID, PLANS, run_command, script
from dynamic_network_architectures.architectures.unet import PlainConvUNet
from scipy.stats import chisquare
from torch import nn

from nnunet_ssl.data.positions import slice_position, slice_position_from_properties
from nnunet_ssl.data.sampler import TwoViewSliceSampler, slice_sampling_probabilities
from nnunet_ssl.data.views import PCLSliceViews, pcl_slice_view_transform
from nnunet_ssl.errors import SSLUserError
from nnunet_ssl.methods import DataGeometry, PCLConfig, get_method


pytestmark = pytest.mark.usefixtures("single_torch_thread")


# --- the position label ----------------------------------------------------------------------------------------

def test_slice_position_hand_computed():
    assert slice_position(0, 0, 10) == pytest.approx(0.1)  # first slice: 1 / 10, never 0
    assert slice_position(9, 0, 10) == pytest.approx(1.0)  # last slice: exactly 1
    assert slice_position(4, 0, 20) == pytest.approx(5 / 20)
    # non-zero crop offset: z_orig = 3 + 4 = 7 -> (7 + 1) / 20 = 0.4
    assert slice_position(4, 3, 20) == pytest.approx(0.4)
    # nonzero crop at the end of the volume: z_orig = 12 + 7 = 19 -> 20 / 20
    assert slice_position(7, 12, 20) == pytest.approx(1.0)
    assert isinstance(slice_position(0, 0, 1), float) and slice_position(0, 0, 1) == 1.0


@pytest.mark.parametrize("args", [(10, 0, 10), (-1, 0, 10), (13, 3, 16), (0, 0, 0), (0, -1, 5)])
def test_slice_position_rejects_slices_outside_the_volume(args):
    with pytest.raises(ValueError):
        slice_position(*args)


def test_slice_position_from_nnunet_properties():
    properties = {"shape_before_cropping": (20, 64, 64), "bbox_used_for_cropping": [[3, 15], [0, 64], [2, 60]],
                  "shape_after_cropping_and_before_resampling": (12, 64, 58)}
    assert slice_position_from_properties(properties, 4) == pytest.approx(0.4)
    assert slice_position_from_properties(properties, 0) == pytest.approx(4 / 20)
    assert slice_position_from_properties(properties, 11) == pytest.approx(15 / 20)


# --- a fake nnU-Net dataset --------------------------------------------------------------------------------------

class FakeCases:
    """``load_case`` like nnU-Net's datasets: (data (C, Z, Y, X), seg, None, properties).
    Every voxel of slice z holds ``z`` (channel c: z + 100 c), so a view tells its slice."""

    def __init__(self, slices: dict[str, int], in_plane=(24, 20), crop_start=2, channels=1, noise=False):
        self.cases = {}
        rng = np.random.default_rng(0)
        for key, n in slices.items():
            data = np.zeros((channels, n, *in_plane), dtype=np.float32)
            data += np.arange(n, dtype=np.float32)[None, :, None, None]
            data += 100 * np.arange(channels, dtype=np.float32)[:, None, None, None]
            if noise:
                data += rng.normal(size=data.shape).astype(np.float32)
            properties = {"shape_before_cropping": (n + crop_start + 3, in_plane[0], in_plane[1]),
                          "bbox_used_for_cropping": [[crop_start, crop_start + n], [0, in_plane[0]], [0, in_plane[1]]],
                          "shape_after_cropping_and_before_resampling": (n, *in_plane)}
            self.cases[key] = (data, np.zeros((1, n, *in_plane), dtype=np.int8), None, properties)

    def load_case(self, key):
        return self.cases[key]


def identity_views(patch_size):
    return PCLSliceViews(patch_size, p_spatial=0.0, mirror_axes=())


class Recorder:
    """A view transform that records its inputs and returns them unchanged."""

    def __init__(self):
        self.inputs = []

    def __call__(self, data):
        self.inputs.append(data.copy())
        return data.copy()


# --- slice sampling ----------------------------------------------------------------------------------------------

def test_sampling_probabilities_are_proportional_to_slice_counts():
    assert np.allclose(slice_sampling_probabilities([10, 30]), [0.25, 0.75])
    assert np.allclose(slice_sampling_probabilities([7]), [1.0])
    for bad in ([], [3, 0], [-1, 4]):
        with pytest.raises(ValueError):
            slice_sampling_probabilities(bad)


def test_slices_are_drawn_uniformly_over_all_slices_of_all_cases():
    slices = {"a": 5, "b": 10, "c": 20}
    cases = FakeCases(slices, crop_start=2)
    sampler = TwoViewSliceSampler(cases, list(slices), 16, [16, 16], identity_views([16, 16]))
    assert sampler.slice_counts == [5, 10, 20]
    np.random.seed(0)
    counts = {(k, z): 0 for k, n in slices.items() for z in range(n)}
    draws = 0
    for _ in range(150):
        batch = sampler.generate_train_batch()
        for key, z, view, p in zip(batch["keys"], batch["slices"], batch["view1"], batch["positions"]):
            counts[(key, z)] += 1
            draws += 1
            assert torch.all(view == z)  # the view is that slice
            total = slices[key] + 2 + 3
            assert p.item() == pytest.approx((2 + z + 1) / total)  # p = (z_orig + 1) / Z_orig, crop start 2
    case_freq = np.array([sum(v for (k, _), v in counts.items() if k == key) for key in slices]) / draws
    assert np.allclose(case_freq, np.array([5, 10, 20]) / 35, atol=0.03)  # 2400 draws: sd <= 0.01
    # every one of the 35 slices equally likely
    assert chisquare(list(counts.values())).pvalue > 1e-3


# --- views ---------------------------------------------------------------------------------------------------------

def test_views_have_the_patch_shape_and_come_from_one_shared_crop():
    cases = FakeCases({"a": 6, "b": 9}, in_plane=(24, 20), channels=2, noise=True)
    np.random.seed(1)
    recorder = Recorder()
    batch = TwoViewSliceSampler(cases, ["a", "b"], 8, [16, 16], recorder).generate_train_batch()
    assert batch["view1"].shape == batch["view2"].shape == (8, 2, 16, 16)
    assert batch["view1"].dtype == torch.float32 and batch["positions"].shape == (8,)
    assert len(recorder.inputs) == 16
    for first, second in zip(recorder.inputs[0::2], recorder.inputs[1::2]):
        assert first.shape == (1, 2, 16, 16) and first.dtype == np.float32
        assert np.array_equal(first, second)  # both views start from the same crop
    # the crop is a patch of the slice: 16 x 16 inside 24 x 20, found in the data
    for crop, key, z in zip(recorder.inputs[0::2], batch["keys"], batch["slices"]):
        data = cases.load_case(key)[0][:, z]
        found = [(y, x) for y in range(24 - 16 + 1) for x in range(20 - 16 + 1)
                 if np.array_equal(data[:, y:y + 16, x:x + 16], crop[0])]
        assert len(found) == 1


def test_views_are_identical_without_augmentation_and_differ_with_the_reference_one():
    cases = FakeCases({"a": 6, "b": 9}, in_plane=(24, 20), noise=True)
    np.random.seed(2)
    plain = TwoViewSliceSampler(cases, ["a", "b"], 8, [16, 16], identity_views([16, 16])).generate_train_batch()
    assert torch.equal(plain["view1"], plain["view2"])
    augmented = TwoViewSliceSampler(cases, ["a", "b"], 8, [16, 16],
                                    pcl_slice_view_transform([16, 16])).generate_train_batch()
    assert augmented["view1"].shape == (8, 1, 16, 16) and torch.isfinite(augmented["view1"]).all()
    differ = [not torch.equal(a, b) for a, b in zip(augmented["view1"], augmented["view2"])]
    assert sum(differ) >= 6  # a pair is identical with p = 0.33^2 / 4 < 3%


def test_small_slices_are_zero_padded_centred():
    cases = FakeCases({"a": 4}, in_plane=(10, 12), crop_start=0)
    np.random.seed(3)
    batch = TwoViewSliceSampler(cases, ["a"], 4, [16, 16], identity_views([16, 16])).generate_train_batch()
    for view, z in zip(batch["view1"], batch["slices"]):
        assert view.shape == (1, 16, 16)
        assert torch.all(view[0, 3:13, 2:14] == z) and view.sum() == z * 120  # pad 6 -> 3 + 3, pad 4 -> 2 + 2


def test_v1_spatial_transform_has_the_reference_arguments():
    views = pcl_slice_view_transform([32, 28])
    spatial = views.spatial
    assert type(spatial) is v1_spatial.SpatialTransform  # batchgenerators v1, not batchgeneratorsv2
    assert list(spatial.patch_size) == [32, 28] and list(spatial.patch_center_dist_from_border) == [16, 14]
    assert spatial.do_elastic_deform and tuple(spatial.alpha) == (100.0, 350.0) and tuple(spatial.sigma) == (14.0, 17.0)
    assert spatial.do_rotation and tuple(spatial.angle_x) == pytest.approx((0.0, 2 * np.pi))
    assert spatial.do_scale and tuple(spatial.scale) == (0.7, 1.3)
    assert spatial.border_mode_data == "constant" and spatial.border_cval_data == 0 and spatial.order_data == 3
    assert spatial.random_crop is False and spatial.independent_scale_for_each_axis is False
    assert spatial.p_el_per_sample == spatial.p_rot_per_sample == spatial.p_scale_per_sample == 1
    assert views.maybe_spatial.prob == pytest.approx(0.67) and views.maybe_spatial.transform is spatial
    assert isinstance(views.mirror, v1_spatial.MirrorTransform) and tuple(views.mirror.axes) == (0, 1)


def test_v1_spatial_transform_fires_with_p_067_and_gets_the_reference_arguments(monkeypatch):
    calls = []

    def fake_augment_spatial(data, seg, **kwargs):
        calls.append(kwargs)
        return data + 1000, seg

    monkeypatch.setattr(v1_spatial, "augment_spatial", fake_augment_spatial)
    views = pcl_slice_view_transform([8, 8])
    np.random.seed(4)
    crop = np.random.rand(1, 1, 8, 8).astype(np.float32)
    outputs = [views(crop) for _ in range(600)]
    assert np.array_equal(crop, crop.copy()) and crop.max() < 1  # the input is never changed in place
    fired = [o.min() >= 1000 for o in outputs]
    assert len(calls) == sum(fired) and abs(np.mean(fired) - 0.67) < 0.06
    kwargs = calls[0]
    assert kwargs["patch_size"] == [8, 8] and kwargs["random_crop"] is False
    assert kwargs["alpha"] == (100.0, 350.0) and kwargs["sigma"] == (14.0, 17.0)
    assert kwargs["angle_x"] == pytest.approx((0.0, 2 * np.pi)) and kwargs["scale"] == (0.7, 1.3)
    assert kwargs["border_mode_data"] == "constant" and kwargs["border_cval_data"] == 0 and kwargs["order_data"] == 3
    # both in-plane axes mirrored, each with p = 0.5
    unfired = [o[0, 0] for o, f in zip(outputs, fired) if not f]
    flips = [(np.array_equal(o, crop[0, 0][::-1]) or np.array_equal(o, crop[0, 0][::-1, ::-1]),
              np.array_equal(o, crop[0, 0][:, ::-1]) or np.array_equal(o, crop[0, 0][::-1, ::-1])) for o in unfired]
    assert 0.4 < np.mean([f[0] for f in flips]) < 0.6 and 0.4 < np.mean([f[1] for f in flips]) < 0.6


# --- the method on a 2D nnU-Net encoder --------------------------------------------------------------------------

FEATURES = [4, 8, 16]


def tiny_2d_encoder() -> nn.Module:
    torch.manual_seed(0)
    return PlainConvUNet(1, 3, FEATURES, nn.Conv2d, 3, [[1, 1], [2, 2], [2, 2]], 2, 2, 2, False, nn.InstanceNorm2d,
                         {"eps": 1e-5, "affine": True}, None, None, nn.LeakyReLU, {"inplace": True}).encoder


def geometry_2d(**overrides) -> DataGeometry:
    values = dict(plans_patch_size=[16, 16], divisors=[4, 4], image_shapes=[[6, 24, 20], [9, 24, 20]])
    values.update(overrides)
    return DataGeometry(**values)


@pytest.mark.parametrize("name", ["pcl", "simclr", "gcl"])
def test_a_training_step_on_2d_slices(name):
    method_class = get_method(name)
    method = method_class(tiny_2d_encoder(), FEATURES[-1], method_class.config_class(), geometry_2d())
    derived = method.derived_values()
    assert derived["patch_size"] == [16, 16] and derived["effective_theta"] == 0.1  # no rescaling in 2D
    assert derived["theta_rescaled"] is False and derived["total_slices"] == 15 and derived["position_axis"] == 0
    assert json.loads(json.dumps(derived)) == derived
    np.random.seed(5)
    sampler = method.make_sampler(FakeCases({"a": 6, "b": 9}, noise=True), ["a", "b"], 6)
    assert isinstance(sampler, TwoViewSliceSampler)
    assert type(sampler.view_transform.spatial) is v1_spatial.SpatialTransform
    batch = sampler.generate_train_batch()
    method.train()
    loss, metrics = method.training_step(batch)
    assert torch.isfinite(loss) and metrics["loss"] == pytest.approx(loss.item())
    assert 0 <= metrics["positive_fraction"] <= 1
    loss.backward()
    # the norm after the deepest hooked conv (conv_paths[0]) is the only part outside the loss's graph
    after_readout = "encoder." + method.readout.conv_paths[0].removesuffix(".conv") + ".norm."
    for param_name, param in method.named_parameters():
        if param_name.startswith(after_readout):
            assert param.grad is None, param_name
        else:
            assert param.grad is not None and torch.isfinite(param.grad).all(), param_name


def test_2d_uses_theta_as_given_and_3d_is_unchanged():
    method = get_method("pcl")(tiny_2d_encoder(), FEATURES[-1], PCLConfig(theta=0.35), geometry_2d())
    assert method.threshold == 0.35
    positions = torch.tensor([0.1, 0.4, 0.46])
    assert method.positive_mask(positions, torch.arange(3)).tolist() == [[True, True, False], [True, True, True],
                                                                         [False, True, True]]
    torch.manual_seed(0)
    encoder_3d = PlainConvUNet(1, 3, FEATURES, nn.Conv3d, 3, [[1, 1, 1], [2, 2, 2], [2, 2, 2]], 2, 2, 2, False,
                               nn.InstanceNorm3d, {"eps": 1e-5, "affine": True}, None, None, nn.LeakyReLU,
                               {"inplace": True}).encoder
    method_3d = get_method("pcl")(encoder_3d, FEATURES[-1], PCLConfig(), DataGeometry(
        plans_patch_size=[16, 32, 32], divisors=[4, 4, 4], image_shapes=[[40, 40, 40]] * 5))
    assert set(method_3d.derived_values()) == {"patch_size", "patch_fraction", "effective_theta", "position_axis",
                                                   "readout"}
    assert method_3d.threshold == pytest.approx(0.1 * (1 - 16 / 40))


def test_2d_position_axis_must_be_the_slice_axis():
    identity = [1, 0, 0, 0, 1, 0, 0, 0, 1]
    geometry = geometry_2d(directions=[identity, identity], transpose_forward=[0, 1, 2])
    method = get_method("pcl")(tiny_2d_encoder(), FEATURES[-1], PCLConfig(position_axis="SI"), geometry)
    assert method.axis == 0  # SI is array axis 0 for an identity direction
    with pytest.raises(SSLUserError, match="slices along axis 0"):
        get_method("pcl")(tiny_2d_encoder(), FEATURES[-1], PCLConfig(position_axis="LR"), geometry)
    with pytest.raises(SSLUserError, match="slices along axis 0"):
        get_method("pcl")(tiny_2d_encoder(), FEATURES[-1], PCLConfig(position_axis=1), geometry_2d())


def test_paper_recipe_parses_and_documents_every_value():
    from nnunet_ssl.methods.recipes import load_recipe
    from nnunet_ssl.integration.pretrainer import PretrainSchedule
    recipe = load_recipe("pcl_paper_2d")
    assert recipe["method"] == "pcl"
    config = PCLConfig.from_dict(recipe["method_config"])
    schedule = PretrainSchedule.from_dict(recipe["schedule"])
    assert (config.theta, config.temperature, config.base_temperature, config.projection_dim) == (0.1, 0.1, 0.07, 512)
    assert (schedule.initial_lr, schedule.momentum, schedule.weight_decay) == (0.1, 0.9, 1e-5)
    assert (schedule.batch_size, schedule.num_epochs) == (32, 300)
    assert set(recipe["method_config"]) | set(recipe["schedule"]) <= set(recipe["sources"])
    assert "--iterations-per-epoch" in recipe["sources"]["iterations_per_epoch"]


# --- end to end ----------------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_pretrain_2d_and_finetune_with_ssl_init_trainer(pretrained, tmp_path):
    """Preprocess 2d for the CPU plans, pretrain PCL on slices, fine-tune nnU-Net 2d from it. Results go to a
    fresh nnUNet_results, apart from the session's 3d_fullres pretraining."""
    run_command([script("nnUNetv2_preprocess"), "-d", str(DATASET_ID), "-c", "2d", "-plans_name", PLANS, "-np", "1"])
    env = {**{k: v for k, v in os.environ.items() if k != "nnUNet_extTrainer"}, "nnUNet_results": str(tmp_path),
           "nnUNet_n_proc_DA": "0", "nnUNet_def_n_proc": "1", "nnUNet_compile": "false"}
    pretrain = subprocess.run([script("nnUNetv2_ssl_pretrain"), "-d", str(DATASET_ID), "-c", "2d", "-p", PLANS,
                               "-device", "cpu", "--epochs", "1", "--iterations-per-epoch", "2", "--batch-size", "8"],
                              env=env, capture_output=True, text=True, timeout=600)
    assert pretrain.returncode == 0, pretrain.stdout[-3000:] + pretrain.stderr[-3000:]
    folder = tmp_path / pretrained["name"] / f"SSLPretrain_pcl__{PLANS}__2d"
    meta = json.load(open(folder / "checkpoint_final.json"))
    assert meta["configuration"] == "2d" and meta["epochs_completed"] == 1
    derived = meta["hparams"]["derived"]
    assert derived["effective_theta"] == 0.1 and derived["theta_rescaled"] is False
    assert derived["position_axis"] == 0 and len(derived["patch_size"]) == 2
    assert derived["total_slices"] == 238  # 8 synthetic cases of 28, 30 or 32 slices
    assert 0 < meta["final_metrics"]["positive_fraction"] < 1 and np.isfinite(meta["final_metrics"]["loss"])

    train = subprocess.run([script("nnUNetv2_train"), str(DATASET_ID), "2d", "0", "-p", PLANS,
                            "-tr", "SSLInitTrainer_tiny", "-device", "cpu"], env=env,
                           capture_output=True, text=True, timeout=600)
    assert train.returncode == 0, train.stdout[-3000:] + train.stderr[-3000:]
    fold = tmp_path / pretrained["name"] / f"SSLInitTrainer_tiny__{PLANS}__2d" / "fold_0"
    log = "".join(open(fold / f).read() for f in os.listdir(fold) if f.startswith("training_log"))
    assert "loaded pretrained encoder (" in log and str(folder / "checkpoint_final.pth") in log
