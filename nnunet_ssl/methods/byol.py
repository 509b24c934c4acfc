"""BYOL (Grill et al., NeurIPS 2020) on the planned encoder: an online encoder -> projector -> predictor
regresses the projection of the other view by a momentum target; normalised MSE, no negatives.
"""
import math
from dataclasses import dataclass
from typing import ClassVar

import torch

from nnunet_ssl.blocks.health import normalised_std
from nnunet_ssl.blocks.heads import ProjectionHead
from nnunet_ssl.blocks.infonce import symmetric_retrieval_top1
from nnunet_ssl.blocks.momentum import cosine_schedule, update_momentum
from nnunet_ssl.blocks.similarity import normalized_mse
from nnunet_ssl.methods.base import DataGeometry, Range
from nnunet_ssl.methods.momentum_pair import MomentumPairConfig, MomentumPairMethod


@dataclass(frozen=True)
class BYOLConfig(MomentumPairConfig):
    projection_dim: int = 256  # [paper: BYOL sec. 3.3, projector output 256]
    hidden_dim: int = 4096  # [paper: BYOL, hidden 4096, BatchNorm + ReLU, same for the predictor]
    head_batch_norm: bool = True  # [paper: BYOL]
    base_momentum: float = 0.996  # tau_base [paper: BYOL sec. 3.3]
    final_momentum: float = 1.0  # tau -> 1 with a cosine schedule [paper: BYOL sec. 3.3]
    # collapse warning when the embeddings' per-dimension std falls below this fraction of 1/sqrt(D) [assumption,
    # as MLSSCL's]
    collapse_std_ratio: float = 0.1

    OWNER: ClassVar[str] = "byol"
    LIMITS: ClassVar[dict] = {"projection_dim": Range(1), "hidden_dim": Range(1), "base_momentum": Range(0, 1),
                              "final_momentum": Range(0, 1), "collapse_std_ratio": Range(0)}

    def check(self) -> None:
        if self.base_momentum > self.final_momentum:
            self.refuse("base_momentum/final_momentum", f"the momentum rises from base_momentum to final_momentum, "
                        f"so base_momentum <= final_momentum; got {self.base_momentum} > {self.final_momentum}",
                        "e.g. --set base_momentum=0.996 --set final_momentum=1 (the defaults)")


class BYOL(MomentumPairMethod):
    """Symmetrised: each view's prediction regresses the other view's target projection [paper: L + L~]."""
    name = "byol"
    config_class = BYOLConfig
    # [assumption] BYOL uses LARS at lr 0.2 x batch/256; the pretraining loop's SGD keeps its defaults (lr 0.1,
    # momentum 0.9, cosine)

    def __init__(self, encoder, bottleneck_channels: int, config: BYOLConfig, geometry: DataGeometry):
        super().__init__(encoder, bottleneck_channels, config, geometry)
        # not in the online branch the target copies: BYOL's target has no predictor [paper]
        self.predictor = ProjectionHead(config.projection_dim, config.hidden_dim, config.projection_dim,
                                        config.head_batch_norm)
        self.current_momentum = config.base_momentum

    def training_step(self, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        views = torch.cat([batch["view1"], batch["view2"]])
        features = self.pooled_features(views)
        projections = self.projector(features)
        predictions = self.predictor(projections)
        with torch.no_grad():
            targets = self.target_projection(views)
        p1, p2 = predictions.chunk(2)
        z1, z2 = targets.chunk(2)
        loss = normalized_mse(p1, z2) + normalized_mse(p2, z1)
        # BYOL's loss has no collapse value (collapsed embeddings score 0), so its health is retrieval: does a
        # prediction pick its own patch's other view among the batch's targets (chance 1 / batch), and do the
        # readout features, without any head (what fine-tuning keeps)?
        f1, f2 = features.detach().chunk(2)
        return loss, {"loss": loss.item(), "embedding_std": normalised_std(projections.detach()),
                      "momentum": float(self.current_momentum),
                      "top1_retrieval": symmetric_retrieval_top1(p1.detach(), p2.detach(), z1, z2),
                      "top1_feature_retrieval": symmetric_retrieval_top1(f1, f2, f1, f2),
                      "top1_chance": 1.0 / len(p1)}

    def after_optimizer_step(self, step: int, total_steps: int) -> None:
        """tau = 1 - (1 - tau_base)(cos(pi k / K) + 1) / 2 [paper: BYOL sec. 3.3], then xi <- tau xi + (1 - tau) theta."""
        c = self.config
        self.current_momentum = cosine_schedule(min(step, total_steps), total_steps, c.base_momentum, c.final_momentum)
        update_momentum(self._online_branch(), self.target, self.current_momentum)

    def health_warnings(self, epoch_metrics: dict[str, float]) -> list[str]:
        std = epoch_metrics.get("embedding_std")
        limit = self.config.collapse_std_ratio / math.sqrt(self.config.projection_dim)
        if std is not None and std < limit:
            return [f"byol: embedding std {std:.4f} is below {limit:.4f}: the embeddings are collapsing. Lower the "
                    "learning rate or raise the batch size."]
        return []
