"""Two CPU processes (gloo) give the loss and gradients of one process on the concatenated batch:
negatives span the global batch, and the loss scaling matches DDP's gradient averaging."""
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from dynamic_network_architectures.architectures.unet import PlainConvUNet

from nnunet_ssl.methods import DataGeometry, get_method

BATCH = 6  # global; 3 per rank


def _method(name: str):
    torch.manual_seed(0)
    unet = PlainConvUNet(1, 3, [4, 8, 16], torch.nn.Conv3d, 3, [1, 2, 2], 1, 2, 1, conv_bias=False,
                         norm_op=torch.nn.InstanceNorm3d, norm_op_kwargs={"affine": True},
                         nonlin=torch.nn.LeakyReLU, nonlin_kwargs={"inplace": True})
    geometry = DataGeometry([8, 16, 16], [4, 4, 4], [[40, 40, 40]] * 3)
    method_class = get_method(name)
    # BatchNorm statistics would differ per rank on CPU (SyncBatchNorm needs CUDA), so compare without it
    config = method_class.config_class(head_batch_norm=False)
    return method_class(unet.encoder, 16, config, geometry)


def _batch():
    g = torch.Generator().manual_seed(1)
    return {"view1": torch.randn(BATCH, 1, 8, 16, 16, generator=g), "view2": torch.randn(BATCH, 1, 8, 16, 16, generator=g),
            "positions": torch.tensor([0.1, 0.12, 0.5, 0.52, 0.9, 0.3])}


def _grads(method) -> dict:
    return {n: p.grad.clone() for n, p in method.named_parameters() if p.grad is not None}


def _rank_main(rank: int, name: str, store: str, out: str):
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    torch.set_num_threads(1)
    method = _method(name)
    # as in the pretrainer: the pre-norm readout leaves the last norm out of the loss
    model = torch.nn.parallel.DistributedDataParallel(method, find_unused_parameters=True)
    half = slice(rank * BATCH // 2, (rank + 1) * BATCH // 2)
    batch = {k: v[half] for k, v in _batch().items()}
    loss, metrics = model(batch)
    (loss * dist.get_world_size()).backward()  # as the pretrainer does
    if rank == 0:
        torch.save({"loss": loss.detach(), "metrics": metrics, "grads": _grads(method)}, out)
    dist.barrier()
    dist.destroy_process_group()
    # gloo's background threads sometimes abort during interpreter teardown ("terminate called
    # without an active exception"); the work is done and saved, so leave without the teardown
    os._exit(0)


@pytest.mark.parametrize("name", ["pcl", "simclr"])
def test_two_ranks_equal_one_rank_on_the_concatenated_batch(tmp_path, name):
    out = str(tmp_path / "rank0.pt")
    mp.spawn(_rank_main, args=(name, str(tmp_path / "store"), out), nprocs=2, join=True)
    distributed = torch.load(out)

    torch.set_num_threads(1)
    method = _method(name)
    loss, metrics = method(_batch())
    loss.backward()
    single = _grads(method)

    assert torch.allclose(distributed["loss"], loss.detach(), atol=1e-5)
    assert distributed["metrics"]["positive_fraction"] == pytest.approx(metrics["positive_fraction"])
    assert set(distributed["grads"]) == set(single)
    for key, grad in single.items():
        assert torch.allclose(distributed["grads"][key], grad, atol=1e-5, rtol=1e-4), key
