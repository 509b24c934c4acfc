"""MLSSCL on a tiny nnU-Net encoder: clip sizing and refusals, the online/target/queue mechanics, health
warnings, and a short CPU run on structured synthetic volumes in which retrieval rises above chance."""
import json
import math
import warnings

import numpy as np
import pytest
import torch
from dynamic_network_architectures.architectures.unet import PlainConvUNet
from torch import nn

from nnunet_ssl.blocks.infonce import retrieval_top1
from nnunet_ssl.data.clip_sampler import CLIP_KEYS
from nnunet_ssl.errors import SSLUserError
from nnunet_ssl.methods import METHODS, DataGeometry, MLSSCL, MLSSCLConfig

FEATURES = [4, 8, 16]
EYE = np.eye(3).flatten().tolist()


@pytest.fixture(autouse=True)
def single_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny convolutions on a shared machine
    yield
    torch.set_num_threads(threads)


def tiny_encoder(seed=0) -> nn.Module:
    torch.manual_seed(seed)
    return PlainConvUNet(1, 3, FEATURES, nn.Conv3d, 3, [[1, 1, 1], [2, 2, 2], [2, 2, 2]], 2, 2, 2, False,
                         nn.InstanceNorm3d, {"eps": 1e-5, "affine": True}, None, None, nn.LeakyReLU,
                         {"inplace": True}).encoder


def geometry(shapes=((40, 40, 40),) * 10, directions="eye", **overrides) -> DataGeometry:
    values = dict(plans_patch_size=[16, 32, 32], divisors=[4, 4, 4], image_shapes=[list(s) for s in shapes],
                  directions=[EYE] * len(shapes) if directions == "eye" else directions, transpose_forward=[0, 1, 2])
    values.update(overrides)
    return DataGeometry(**values)


def build(geo=None, seed=0, **config) -> MLSSCL:
    config = {"projection_dim": 16, "hidden_dim": 32, **config}
    return MLSSCL(tiny_encoder(seed), FEATURES[-1], MLSSCLConfig(**config), geo or geometry())


def clip_batch(method: MLSSCL, batch_size=4, seed=0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {name: torch.randn(batch_size, 1, *method.clip_shape, generator=g) for name in CLIP_KEYS}


# --- sizing and refusals ------------------------------------------------------------------------------------------

def test_registered_and_sized_from_the_plans_and_the_smallest_case():
    assert METHODS["mlsscl"] is MLSSCL
    # hippocampus-like: SI extents down to 24 voxels, CPU plans (patch 32x48x32, total stride 8)
    shapes = [(24, 40, 31), (36, 50, 35), (47, 59, 43)]
    method = build(geometry(shapes, plans_patch_size=[32, 48, 32], divisors=[8, 8, 8]))
    assert method.clip_shape == [8, 24, 24]  # 16 slices at stride 2 would span 31 > 24
    derived = method.derived_values()
    assert json.loads(json.dumps(derived)) == derived
    assert derived["long_span"] == 15 and derived["short_span"] == 8 and derived["queue_size"] == 2
    assert derived["view_array_axes"] == {"axial": [[0, 1, 2]], "coronal": [[1, 0, 2]], "sagittal": [[2, 0, 1]]}
    assert build(geometry()).clip_shape == [16, 32, 32]  # 40^3: 16 slices span 31; in-plane = plans' patch


def test_requested_clip_size():
    assert build(geometry(requested_patch_size=[8, 16, 24])).clip_shape == [8, 16, 24]
    assert build(num_slices=12, in_plane_size=[16, 16]).clip_shape == [12, 16, 16]
    with pytest.raises(SSLUserError, match="disagrees"):
        build(geometry(requested_patch_size=[8, 16, 24]), num_slices=12)
    with pytest.raises(SSLUserError, match="not a multiple") as excinfo:
        build(num_slices=10)
    assert "multiple of 4" in excinfo.value.fix
    with pytest.raises(SSLUserError, match="in_plane_size"):
        build(in_plane_size=[16, 18])
    with pytest.raises(SSLUserError, match="δS < δL"):
        build(long_stride=2, short_stride=2)
    with pytest.raises(SSLUserError, match="2D network") as excinfo:  # nnU-Net's 2d configuration
        build(geometry(plans_patch_size=[32, 32], divisors=[4, 4]))
    assert excinfo.value.fix == "use -c 3d_fullres"


def test_a_volume_too_small_for_the_clips_is_refused_clearly():
    shapes = [(40, 40, 40)] * 4 + [(40, 40, 20)]  # one case is short along LR: its sagittal clip cannot fit
    with pytest.raises(SSLUserError) as excinfo:
        # 12 slices at stride 3 span 34 voxels
        build(geometry(shapes), num_slices=12, long_stride=3, in_plane_size=[16, 16])
    problem = excinfo.value.problem
    assert "1 of 5 cases are too small" in problem and "case #4 of shape [40, 40, 20]" in problem
    assert "sagittal clip needs 34x16x16 voxels (slices x in-plane), the case has 20x40x40" in problem
    assert "long_stride" in excinfo.value.fix
    # automatic sizing shrinks C, but never below one network stride
    with pytest.raises(SSLUserError, match="only 5 voxels long"):
        build(geometry([(40, 40, 40), (5, 40, 40)]))
    assert build(geometry(shapes)).clip_shape == [8, 32, 20]  # LR (20 voxels) is in-plane axis 2 of axial, coronal


def test_views_are_resolved_per_case_from_the_direction():
    swap_lr_si = np.eye(3)[:, [2, 1, 0]].flatten().tolist()  # ITK index x runs along SI, z along LR
    method = build(geometry(directions=[EYE] * 5 + [swap_lr_si] * 5))
    derived = method.derived_values()
    assert derived["view_axes_source"] == "image direction and transpose_forward"
    # eye: SI is numpy axis 0; swapped: SI is numpy axis 2 (ITK x), LR numpy axis 0
    assert derived["view_array_axes"]["axial"] == [[0, 1, 2], [2, 1, 0]]
    assert derived["view_array_axes"]["sagittal"] == [[0, 2, 1], [2, 0, 1]]


def test_without_directions_array_order_is_used_and_said():
    with pytest.warns(UserWarning, match="array axes 0, 1, 2"):
        method = build(geometry(directions=None))
    assert method.derived_values()["view_axes_source"] == "array order (no image direction recorded)"
    assert any("array axes 0, 1, 2" in w for w in method.health_warnings({}))
    assert method.health_warnings({}) == []  # said once


def test_a_queue_larger_than_0_7_of_the_cases_warns():
    assert build().queue_size == 7  # automatic: 0.7 x 10 cases
    with pytest.warns(UserWarning, match="queue_size 8 exceeds 0.7 x the 10 cases"):
        method = build(queue_size=8)
    assert any("false" in w or "own case" in w for w in method.health_warnings({}))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        build(queue_size=7)


# --- networks, loss, momentum, queues -----------------------------------------------------------------------------

def test_training_step_trains_the_online_branch_only_and_fills_the_queues():
    method = build(queue_size=6)
    method.train()
    target_params = dict(method.target.named_parameters())
    assert target_params and not any(p.requires_grad for p in target_params.values())
    trainable = {n for n, p in method.named_parameters() if p.requires_grad}
    assert trainable and not any(n.startswith("target.") for n in trainable)
    assert {n.split(".")[0] for n in trainable} == {"encoder", "projector", "predictor"}
    optimizer = torch.optim.SGD(method.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)

    for step in range(3):
        before = {n: p.detach().clone() for n, p in method.target.named_parameters()}
        loss, metrics = method.training_step(clip_batch(method, seed=step))
        assert loss.ndim == 0 and torch.isfinite(loss)
        assert all(isinstance(v, float) and math.isfinite(v) for v in metrics.values())
        assert metrics["loss"] == pytest.approx(metrics["loss_multiview"] + metrics["loss_long_short"], rel=1e-5)
        assert metrics["loss_multiview"] == pytest.approx(
            sum(metrics[f"loss_{p}"] for p in ("axial_coronal", "axial_sagittal", "coronal_sagittal")), rel=1e-5)
        assert metrics["top1_chance"] == pytest.approx(1 / 4 if step == 0 else 1 / (min(4 * step, 6) + 1))
        for queue in method.queues.values():
            assert int(queue.num_filled) == min(4 * (step + 1), 6)
        optimizer.zero_grad()
        loss.backward()
        after_readout = "encoder." + method.readout.conv_paths[0].removesuffix(".conv") + ".norm."  # prenorm
        for name, param in method.named_parameters():
            if name.startswith("target.") or name.startswith(after_readout):
                assert param.grad is None, name
            else:
                assert param.grad is not None and torch.isfinite(param.grad).all(), name
        optimizer.step()
        assert all(torch.equal(before[n], p) for n, p in method.target.named_parameters())  # untouched by SGD
        online = dict(method._online_branch().named_parameters())
        method.after_optimizer_step(step + 1, 10)
        for name, param in method.target.named_parameters():
            m = method.config.momentum
            expected = m * before[name] + (1 - m) * online[name].detach()
            assert torch.allclose(param, expected, atol=1e-6), name
        assert any(not torch.equal(before[n], p) for n, p in method.target.named_parameters())  # it moved
    assert set(method.queues) == {"axial", "coronal", "sagittal"}


def test_loss_weights_and_symmetric_long_short():
    method = build(alpha=0.5, beta=2.0, symmetric_long_short=True)
    assert set(method.queues) == {"axial", "coronal", "sagittal", "short"}
    method.train()
    for seed in range(2):  # in-batch negatives, then the queues
        loss, metrics = method.training_step(clip_batch(method, seed=seed))
        assert torch.isfinite(loss)
        assert metrics["loss"] == pytest.approx(0.5 * metrics["loss_multiview"] + 2.0 * metrics["loss_long_short"],
                                                rel=1e-5)
    assert int(method.queues["short"].num_filled) == 7  # 2 x 4 keys, 7 places (0.7 x 10 cases)


@pytest.mark.parametrize("name, unused_views, only_term", [("mlsscl_multiview", ["short"], "loss_multiview"),
                                                           ("mlsscl_longshort", ["coronal", "sagittal"],
                                                            "loss_long_short")])
def test_poster_ablations_compute_only_their_term(name, unused_views, only_term):
    variant = METHODS[name]
    assert issubclass(variant, MLSSCL) and variant.name == name
    method = variant(tiny_encoder(), FEATURES[-1], variant.config_class(projection_dim=16, hidden_dim=32), geometry())
    method.train()
    for seed in range(2):
        batch = clip_batch(method, seed=seed)
        for view in unused_views:  # never encoded: NaNs there would make the loss NaN
            batch[view] = torch.full_like(batch[view], float("nan"))
        loss, metrics = method.training_step(batch)
        assert torch.isfinite(loss) and metrics["loss"] == pytest.approx(metrics[only_term], rel=1e-5)
        assert not {"loss_multiview", "loss_long_short"} - {only_term} & set(metrics)
    assert int(method.queues["axial"].num_filled) == 7
    assert all(int(method.queues[v].num_filled) == 0 for v in unused_views if v in method.queues)


def test_state_dict_holds_target_and_queues_for_resume():
    method = build()
    method.train()
    optimizer = torch.optim.SGD(method.parameters(), lr=0.1)
    for step in range(2):
        loss, _ = method.training_step(clip_batch(method, seed=step))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        method.after_optimizer_step(step + 1, 10)
    state = method.state_dict()
    assert any(k.startswith("target.encoder.") for k in state)
    assert any(k.startswith("target.projector.") for k in state)
    assert {"queues.axial.keys", "queues.coronal.pointer", "queues.sagittal.num_filled"} <= set(state)
    assert set(f"encoder.{k}" for k in method.encoder.state_dict()) <= set(state)
    resumed = build(seed=1)
    resumed.load_state_dict(state)
    for key, value in resumed.state_dict().items():
        assert torch.equal(value, state[key]), key


def test_defaults_are_the_setting_chosen_from_pretraining_health():
    """augment off, m = 0.99, SGD lr 0.03 (docs/methods/readouts.md: chosen on hippocampus without labels);
    the poster recipe keeps the spec's augmentation and m = 0.999."""
    from nnunet_ssl.methods.recipes import load_recipe
    config = MLSSCLConfig()
    assert (config.augment, config.momentum) == (False, 0.99)
    for name in ("mlsscl", "mlsscl_multiview", "mlsscl_longshort"):
        assert METHODS[name].schedule_defaults == {"initial_lr": 0.03}
        assert METHODS[name].config_class().augment is False
    assert build().make_sampler(None, [], 2).view_transform is None
    assert build(augment=True).make_sampler(None, [], 2).view_transform is not None
    poster = MLSSCLConfig.from_dict(load_recipe("mlsscl_poster")["method_config"])
    assert (poster.augment, poster.momentum) == (True, 0.999)


def test_momentum_schedule_reaches_its_final_value():
    method = build(momentum=0.99, final_momentum=1.0)
    method.after_optimizer_step(0, 100)
    assert method.current_momentum == pytest.approx(0.99)
    method.after_optimizer_step(100, 100)
    assert method.current_momentum == 1.0


def test_collapse_warning_threshold():
    method = build(projection_dim=16, collapse_std_ratio=0.1)  # uniform-sphere std 1/4: warn below 0.025
    method.health_warnings({})  # set-up notes, if any
    assert method.health_warnings({"embedding_std": 0.2}) == []
    [warning] = method.health_warnings({"embedding_std": 0.01})
    assert "collapsing" in warning and "0.0100" in warning


def test_sampler_needs_two_clips_per_step():
    with pytest.raises(SSLUserError, match="at least 2 clips"):
        build().make_sampler(object(), ["a"], batch_size=1)


# --- end to end on CPU --------------------------------------------------------------------------------------------

class StructuredCases:
    """nnU-Net dataset stand-in: each case an isotropic texture with its own frequency and noise level, so
    every clip of a case (any view, any stride) shares its statistics and cases differ."""

    def __init__(self, n, shape, seed=0):
        rng = np.random.default_rng(seed)
        grids = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
        self.volumes = {}
        for i in range(n):
            k, noise = rng.uniform(0.3, 1.3), rng.uniform(0.0, 1.5)
            volume = sum(np.cos(k * g + p) for g, p in zip(grids, rng.uniform(0, 2 * np.pi, 3)))
            self.volumes[f"case_{i:02d}"] = (volume + noise * rng.standard_normal(shape))[None].astype(np.float32)

    def load_case(self, key):
        properties = {"sitk_stuff": {"direction": tuple(EYE), "spacing": (1.0, 1.0, 1.0)},
                      "shape_before_cropping": self.volumes[key].shape[1:]}
        return self.volumes[key], None, None, properties


def test_short_cpu_run_retrieval_rises_above_chance():
    n, shape, steps, batch_size = 32, (20, 22, 24), 120, 8
    cases = StructuredCases(n, shape)
    ids = sorted(cases.volumes)
    torch.manual_seed(0)
    np.random.seed(0)
    method = MLSSCL(tiny_encoder(), FEATURES[-1],
                    MLSSCLConfig(projection_dim=32, hidden_dim=64, momentum=0.9, queue_size=16, augment=False),
                    geometry([shape] * n, plans_patch_size=[16, 16, 16]))
    assert method.clip_shape == [8, 16, 16]
    sampler = method.make_sampler(cases, ids, batch_size)
    optimizer = torch.optim.SGD(method.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-5)
    method.train()
    history = []
    for step in range(steps):
        loss, metrics = method(next(sampler))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        method.after_optimizer_step(step + 1, steps)
        history.append(metrics)

    def mean(key, part):
        return float(np.mean([h[key] for h in part]))

    first, last = history[:20], history[-20:]
    chance = mean("top1_chance", last)
    assert chance == pytest.approx(1 / 17)  # a full queue of 16 keys + the positive
    assert mean("loss", last) < mean("loss", first)
    assert mean("top1_multiview", last) > 2 * chance
    assert mean("top1_long_short", last) > 2 * chance
    assert not method.health_warnings(history[-1])

    # retrieval among all cases at once, no queue: immune to batch-statistics shortcuts of BatchNorm
    with torch.no_grad():
        clips = [sampler.clips_of(cases.volumes[key], cases.load_case(key)[3]) for key in ids]
        x = {view: torch.stack([torch.from_numpy(c[view]) for c in clips]) for view in ("axial", "short")}
        query = method.predictor(method.projector(method.pooled_features(x["short"])))
        assert retrieval_top1(query, method._target_keys(x["axial"])).item() > 2 / n


# --- two processes ------------------------------------------------------------------------------------------------

def _ddp_method() -> MLSSCL:
    # without BatchNorm: its statistics would differ per rank on CPU (SyncBatchNorm needs CUDA)
    return build(geometry(), head_batch_norm=False, queue_size=7, num_slices=4, in_plane_size=[8, 8])


def _two_steps(model, method, batches) -> dict:
    """Two SGD steps as the pretrainer takes them; the second one contrasts against the queues."""
    optimizer = torch.optim.SGD(method.parameters(), lr=0.5)
    for step, batch in enumerate(batches):
        loss, metrics = model(batch)
        optimizer.zero_grad()
        (loss * (torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1)).backward()
        grads = {n: p.grad.clone() for n, p in method.named_parameters() if p.grad is not None}
        optimizer.step()
        method.after_optimizer_step(step + 1, 2)
    queues = {k: v.clone() for k, v in method.state_dict().items() if k.startswith("queues.")}
    return {"loss": loss.detach(), "metrics": metrics, "grads": grads, "queues": queues}


def _rank_main(rank: int, store: str, out: str):
    import os
    torch.distributed.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    torch.set_num_threads(1)
    method = _ddp_method()
    # as in the pretrainer: the pre-norm readout leaves the last norm out of the loss
    model = torch.nn.parallel.DistributedDataParallel(method, find_unused_parameters=True)
    batches = [{k: v[rank * 3:(rank + 1) * 3] for k, v in clip_batch(method, 6, seed).items()} for seed in (0, 1)]
    result = _two_steps(model, method, batches)
    torch.save(result, f"{out}.{rank}")
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()
    os._exit(0)  # gloo threads can abort during interpreter teardown; the results are saved


def test_two_ranks_equal_one_rank_on_the_concatenated_batch(tmp_path):
    import torch.multiprocessing as mp
    out = str(tmp_path / "result")
    mp.spawn(_rank_main, args=(str(tmp_path / "store"), out), nprocs=2, join=True)
    ranks = [torch.load(f"{out}.{r}") for r in range(2)]
    method = _ddp_method()
    single = _two_steps(method, method, [clip_batch(method, 6, seed) for seed in (0, 1)])
    for result in ranks:
        assert torch.allclose(result["loss"], single["loss"], atol=1e-5)
        assert result["metrics"]["top1_chance"] == single["metrics"]["top1_chance"] == 1 / 7  # 6 queued keys + 1
        for key, queue in single["queues"].items():  # every rank enqueued the global batch's keys
            assert torch.allclose(result["queues"][key], queue, atol=1e-5), key
        assert set(result["grads"]) == set(single["grads"])
        for key, grad in single["grads"].items():
            assert torch.allclose(result["grads"][key], grad, atol=1e-5, rtol=1e-4), key
