"""MoCo v2 (He et al. CVPR 2020; Chen et al. arXiv 2003.04297) on the planned encoder: a query from one
view, a key of the other view from a momentum encoder, InfoNCE against a queue of past keys.
"""
from dataclasses import dataclass
from typing import ClassVar

import torch

from nnunet_ssl.blocks.distributed import gather_with_local_grad
from nnunet_ssl.blocks.health import infonce_collapse_loss, normalised_std
from nnunet_ssl.blocks.infonce import InfoNCELoss, retrieval_top1
from nnunet_ssl.blocks.momentum import update_momentum
from nnunet_ssl.blocks.queue import MemoryQueue
from nnunet_ssl.methods.base import DataGeometry, Range
from nnunet_ssl.methods.momentum_pair import MomentumPairConfig, MomentumPairMethod


@dataclass(frozen=True)
class MoCoConfig(MomentumPairConfig):
    projection_dim: int = 128  # [paper: MoCo v2, 2-layer MLP head, 128-d output]
    hidden_dim: int = 2048  # [paper: MoCo v2, 2048-d hidden layer]
    # [assumption] MoCo v2's head has no BatchNorm; nnU-Net's InstanceNorm encoders need a batch-level norm in
    # the head or contrastive training stalls (measured for PCL, docs/methods/pcl.md), as in MLSSCL
    head_batch_norm: bool = True
    temperature: float = 0.2  # tau [paper: MoCo v2]
    momentum: float = 0.999  # m [paper: MoCo]
    # K [assumption] MoCo's 65536 is 5% of ImageNet's 1.28 M images; on datasets of hundreds of cases the same
    # patch's older keys would often be its negatives, so 4096, MLSSCL's cap
    queue_size: int = 4096

    OWNER: ClassVar[str] = "moco"
    LIMITS: ClassVar[dict] = {"projection_dim": Range(1), "hidden_dim": Range(1),
                              "temperature": Range(0, low_open=True), "momentum": Range(0, 1),
                              "queue_size": Range(1)}


class MoCo(MomentumPairMethod):
    """Asymmetric as in MoCo v2 (view 1 queries, view 2 keys). Shuffle-BN across GPUs is not done: the
    key encoder's BatchNorm is in its head only and runs on the key batch alone."""
    name = "moco"
    config_class = MoCoConfig
    schedule_defaults = {"initial_lr": 0.03, "weight_decay": 1e-4}  # [paper: MoCo v2, SGD, momentum 0.9, cosine]

    def __init__(self, encoder, bottleneck_channels: int, config: MoCoConfig, geometry: DataGeometry):
        super().__init__(encoder, bottleneck_channels, config, geometry)
        self.queue = MemoryQueue(config.queue_size, config.projection_dim)
        self.loss = InfoNCELoss(config.temperature)

    def training_step(self, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        embedding = self.projector(self.pooled_features(batch["view1"]))
        queries = gather_with_local_grad(embedding)
        with torch.no_grad():
            keys = gather_with_local_grad(self.target_projection(batch["view2"]))
            # in-batch negatives on the very first step, while the queue is empty
            negatives = self.queue.contents()[0] if int(self.queue.num_filled) > 0 else None
        loss = self.loss(queries, keys, negatives)
        top1 = retrieval_top1(queries.detach(), keys, negatives)
        candidates = len(keys) if negatives is None else len(negatives) + 1
        self.queue.enqueue(keys)
        return loss, {"loss": loss.item(), "loss_collapse": infonce_collapse_loss(candidates),
                      "top1_retrieval": top1.item(),
                      "top1_chance": 1.0 / candidates,
                      "queue_fill": int(self.queue.num_filled) / self.queue.size,
                      "embedding_std": normalised_std(queries.detach())}

    def after_optimizer_step(self, step: int, total_steps: int) -> None:
        """The key encoder follows the query encoder: xi <- m xi + (1 - m) theta [paper: MoCo eq. 2]."""
        update_momentum(self._online_branch(), self.target, self.config.momentum)
