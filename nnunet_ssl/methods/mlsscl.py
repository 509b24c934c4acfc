"""MLSSCL: multiview long-short spatial contrastive learning (Cao et al., ICASSP 2022), on nnU-Net volumes.

Per volume, an axial, a coronal and a sagittal *long* clip (C slices at stride δL) and a *short*
axial clip (C slices at stride δS < δL, inside the long axial clip) [poster]. An online network
(encoder -> projector -> predictor, trained by backprop) is contrasted with a momentum target
(encoder -> projector, one set of weights for all views) whose past keys fill one queue per view
[poster + spec 2.2]. Loss [poster]: ``L = α (L(a, c) + L(a, s) + L(c, s)) + β L(short, long axial)``,
each term InfoNCE against a queue; the pairing is documented in ``MLSSCL.training_step``.

No code of the paper is public and the full text was not available: every number that is not on the
poster is an assumption, tagged where it is set (docs/methods/mlsscl.md lists them).
"""
import math
import warnings
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from nnunet_ssl.blocks.distributed import gather_with_local_grad, world_size
from nnunet_ssl.blocks.health import feature_spread, infonce_collapse_loss, normalised_std
from nnunet_ssl.blocks.heads import ProjectionHead
from nnunet_ssl.blocks.infonce import InfoNCELoss, retrieval_top1
from nnunet_ssl.blocks.momentum import cosine_schedule, make_momentum_copy, update_momentum
from nnunet_ssl.blocks.queue import MemoryQueue
from nnunet_ssl.data.clip_sampler import ClipSampler, clip_view_transform
from nnunet_ssl.data.clips import VIEWS, anatomical_array_axes, clip_span, plan_clip_shape, view_permutation
from nnunet_ssl.errors import SSLUserError
from nnunet_ssl.methods.base import DataGeometry, PretrainingMethod, Range, ReadoutConfig

MAX_QUEUE_FRACTION = 0.7  # K <= ~0.7 x #training scans [spec 2.5, assumption]
MAX_QUEUE_SIZE = 4096  # per view [spec 2.5, assumption: MoCo's 65536 exceeds an epoch of ADNI]
PAIRS = (("axial", "coronal"), ("axial", "sagittal"), ("coronal", "sagittal"))


@dataclass(frozen=True)
class MLSSCLConfig(ReadoutConfig):
    # --- clips [spec 2.3]; None = sized from the data and the plans at start-up (derived_values) ---
    # C, slices per clip: 16 [spec 2.3, assumption], lowered in steps of the network's stride along the
    # slice axis until the long clips fit the smallest case (or raised to one stride). An explicit value
    # must be a multiple of that stride. --patch-size C H W sets it too.
    num_slices: int | None = None
    # δL: 2 [assumption]. The spec's 4 is for 1 mm brain MRI (a 64 mm clip); nnU-Net datasets are often
    # cropped much tighter (hippocampus: 24-47 voxels along SI), where 4 leaves no room.
    long_stride: int = 2
    short_stride: int = 1  # δS < δL [poster]; 1 [spec 2.3, assumption: "1 or 2"]
    # (H, W) in-plane window: the plans' patch on network axes 1 and 2, shrunk to the smallest in-plane
    # extent of any view of any case, multiples of the network's strides [assumption]
    in_plane_size: tuple | None = None
    # --- networks [poster: 2-layer MLP projector and predictor; sizes spec 2.2, assumption: MoCo v2/BYOL] ---
    projection_dim: int = 128
    hidden_dim: int = 2048
    # BatchNorm in projector and predictor [spec 2.2, MoCo v2/BYOL]; nnU-Net's InstanceNorm encoders need it
    # (docs/methods/pcl.md). False only for ablations and exact multi-process tests (CPU BatchNorm is per rank).
    head_batch_norm: bool = True
    # --- loss ---
    temperature: float = 0.2  # tau [spec 2.5, assumption: MoCo v2; 0.07 as an ablation]
    alpha: float = 1.0  # weight of the multiview loss [poster: L = α L_mv + β L_ls; values: assumption]
    beta: float = 1.0  # weight of the long-short loss [same]
    # False: L_ls = l(q_short, k_axial, Q_axial) as LSTCL [spec 2.4, assumption]; True: averaged with
    # l(q_axial, k_short, Q_short), which needs a fourth queue of short-clip keys
    symmetric_long_short: bool = False
    # --- target and queues ---
    # m: 0.99 [assumption, chosen from pretraining health on hippocampus without labels, 2026-12-06:
    # docs/methods/readouts.md]. The spec's 0.999 [spec 2.5: MoCo v1/v2] is a 1000-step time constant, as long
    # as a whole 1500-step CPU pretraining; `--recipe mlsscl_poster` keeps it.
    momentum: float = 0.99
    # None: constant m; a value: cosine ramp from momentum to it over the run (BYOL: 0.996 -> 1)
    final_momentum: float | None = None
    # K per view; None: min(4096, 0.7 x #cases) [spec 2.5, assumption]. Larger than 0.7 x #cases warns:
    # a query's own case then often sits in the queue as a false negative.
    queue_size: int | None = None
    # --- data ---
    # intensity jitter, noise, in-plane mirroring per clip [spec 2.3, assumption]. Off by default [assumption,
    # chosen from pretraining health on hippocampus without labels, 2026-12-06]: with it on, 1500 steps showed no
    # learning (loss >= 0.96 of collapse); the pooled features of small clips carry too little to survive jitter.
    augment: bool = False
    # --- health ---
    # collapse warning when the per-dimension std of the L2-normalised embeddings falls below this
    # fraction of 1/sqrt(projection_dim), its value for embeddings spread over the sphere [assumption]
    collapse_std_ratio: float = 0.1

    OWNER: ClassVar[str] = "mlsscl"
    LIMITS: ClassVar[dict] = {  # checked when built (methods/base.py)
        "num_slices": Range(2, why="a clip needs at least 2 slices"), "long_stride": Range(1),
        "short_stride": Range(1), "in_plane_size": Range(1), "projection_dim": Range(1), "hidden_dim": Range(1),
        "temperature": Range(0, low_open=True), "alpha": Range(0), "beta": Range(0), "momentum": Range(0, 1),
        "final_momentum": Range(0, 1), "queue_size": Range(1), "collapse_std_ratio": Range(0)}

    def check(self) -> None:  # rules between options; what the data decides (clip sizes) is in MLSSCL
        if not self.short_stride < self.long_stride:
            self.refuse("short_stride/long_stride", f"the short clip is the denser one, so δS < δL; got "
                        f"δS = {self.short_stride}, δL = {self.long_stride}",
                        "e.g. --set long_stride=2 --set short_stride=1")
        if self.in_plane_size is not None and (len(self.in_plane_size) != 2 or not all(
                isinstance(s, int) and not isinstance(s, bool) for s in self.in_plane_size)):
            self.refuse("in_plane_size", f"needs two whole numbers (H, W), got {list(self.in_plane_size)}",
                        "e.g. --set in_plane_size=[64,64], or leave it unset for the automatic size")
        if self.alpha + self.beta == 0:
            self.refuse("alpha/beta", "the loss weights are both 0, so nothing would be learnt",
                        "e.g. --set alpha=1 --set beta=1")


class MLSSCL(PretrainingMethod):
    name = "mlsscl"
    config_class = MLSSCLConfig
    # SGD lr 0.03 [assumption: MoCo v2's rate, chosen from pretraining health on hippocampus without labels,
    # 2026-12-06: a larger collapse margin than at the pretrainer's 0.1; docs/methods/readouts.md]
    schedule_defaults = {"initial_lr": 0.03}

    def __init__(self, encoder, bottleneck_channels: int, config: MLSSCLConfig, geometry: DataGeometry):
        super().__init__(encoder, bottleneck_channels, config)  # the config checked itself when built
        if len(geometry.plans_patch_size) != 3 or len(geometry.divisors) != 3:
            raise SSLUserError(f"mlsscl builds 3D clips, but this configuration's patch is "
                               f"{list(geometry.plans_patch_size)} (a 2D network).", "use -c 3d_fullres")
        self._pending_warnings: list[str] = []
        self._resolve_views(geometry)
        self.clip_shape = plan_clip_shape(geometry.image_shapes, self.case_axes, geometry.divisors,
                                          geometry.plans_patch_size, config.num_slices, config.in_plane_size,
                                          config.long_stride, config.short_stride, geometry.requested_patch_size)
        self._size_queue(config, len(geometry.image_shapes))
        for message in self._pending_warnings:
            warnings.warn(message, stacklevel=2)

        # online branch. BatchNorm in both MLPs [spec 2.2, MoCo v2/BYOL]: nnU-Net encoders end in
        # InstanceNorm + LeakyReLU, so pooled bottleneck features start almost equal for every sample and
        # contrastive training stalls without a batch-level norm in the head (docs/methods/pcl.md).
        self.projector = ProjectionHead(self.feature_dim, config.hidden_dim, config.projection_dim,
                                        config.head_batch_norm)
        self.predictor = ProjectionHead(config.projection_dim, config.hidden_dim, config.projection_dim,
                                        config.head_batch_norm)
        # target branch: one momentum copy of encoder + projector for all views [poster]. A child module,
        # so state_dict holds it (resume) and .to() moves it; requires_grad is off, so the optimizer built
        # from parameters() never changes it (SGD skips parameters without a gradient).
        self.target = make_momentum_copy(self._online_branch())
        queued = (*VIEWS, "short") if config.symmetric_long_short else VIEWS
        self.queues = nn.ModuleDict({view: MemoryQueue(self.queue_size, config.projection_dim) for view in queued})
        self.loss = InfoNCELoss(config.temperature)
        self.current_momentum = config.momentum

    # --- set-up --------------------------------------------------------------------------------------
    def _resolve_views(self, geometry: DataGeometry) -> None:
        """Anatomical view axes per case from its direction and nnU-Net's transpose, or array order."""
        n = len(geometry.image_shapes)
        if geometry.directions is not None and geometry.transpose_forward is not None:
            self.transpose_forward = list(geometry.transpose_forward)
            self.case_axes = [anatomical_array_axes(d, self.transpose_forward) for d in geometry.directions]
            self.view_axes_source = "image direction and transpose_forward"
        else:
            self.transpose_forward = None
            self.case_axes = [anatomical_array_axes(None, None)] * n
            self.view_axes_source = "array order (no image direction recorded)"
            self._pending_warnings.append(
                "mlsscl: the dataset records no image direction, so preprocessed array axes 0, 1, 2 are taken as "
                "the axial (SI), coronal (AP) and sagittal (LR) slice axes; check that this holds for your data.")

    def _size_queue(self, config: MLSSCLConfig, num_cases: int) -> None:
        self.num_cases = num_cases
        limit = max(1, int(MAX_QUEUE_FRACTION * num_cases))
        self.queue_size = config.queue_size if config.queue_size is not None else min(MAX_QUEUE_SIZE, limit)
        if self.queue_size > MAX_QUEUE_FRACTION * num_cases:
            self._pending_warnings.append(
                f"mlsscl: queue_size {self.queue_size} exceeds {MAX_QUEUE_FRACTION} x the {num_cases} cases: a "
                "query's own case (an older key of it) will often be among its negatives. Consider "
                f"--set queue_size={limit} or leave it unset.")

    def encoder_loaded(self) -> None:
        update_momentum(self._online_branch(), self.target, 0.0)  # m = 0 copies: the target starts equal

    def _online_branch(self) -> nn.ModuleDict:
        """The online modules the target tracks, under the target's names."""
        return nn.ModuleDict({"encoder": self.encoder, "projector": self.projector})

    def derived_values(self) -> dict:
        c = self.config
        permutations = {view: sorted({view_permutation(axes, view) for axes in self.case_axes}) for view in VIEWS}
        return {**super().derived_values(), "clip_shape": self.clip_shape,
                "long_span": clip_span(self.clip_shape[0], c.long_stride),
                "short_span": clip_span(self.clip_shape[0], c.short_stride), "queue_size": self.queue_size,
                "num_cases": self.num_cases, "view_axes_source": self.view_axes_source,
                "view_array_axes": {view: [list(p) for p in perms] for view, perms in permutations.items()}}

    def make_sampler(self, cases, case_ids: list[str], batch_size: int) -> ClipSampler:
        if batch_size < 2:
            raise SSLUserError(f"mlsscl needs at least 2 clips per process and step (BatchNorm in the heads), "
                               f"got {batch_size}.", f"use --batch-size {2 * world_size()} or more")
        c = self.config
        return ClipSampler(cases, case_ids, batch_size, self.clip_shape[0], c.long_stride, c.short_stride,
                           self.clip_shape[1:], self.transpose_forward, clip_view_transform() if c.augment else None)

    # --- training ----------------------------------------------------------------------------------------
    def _target_keys(self, clips: torch.Tensor) -> torch.Tensor:
        return self.target["projector"](self.pooled_features(clips, encoder=self.target["encoder"]))

    def training_step(self, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        """One step on a batch of {'axial', 'coronal', 'sagittal', 'short': (B, c, C, H, W)}.

        ``l(x -> y) = InfoNCE(q_x, k_y, Q_y)``: the online prediction of view x against the target key of
        view y, with view y's queue as negatives (in-batch negatives on the very first step, while the
        queues are empty).

        - multiview [poster]: L(x, y) = (l(x -> y) + l(y -> x)) / 2 [spec 2.4, assumption], summed over
          (axial, coronal), (axial, sagittal), (coronal, sagittal);
        - long-short [poster: L(v_S, v_L)]: l(short -> axial) [spec 2.4, assumption, LSTCL]; with
          ``symmetric_long_short`` the mean of that and l(axial -> short);
        - L = α L_mv + β L_ls [poster]. Then the target keys of the long clips (and of the short clip if
          symmetric) join their queues. Under DDP queries and keys are gathered from every rank first,
          so every rank computes the global loss and enqueues the same keys.
        """
        c = self.config
        # a term with weight 0 is not computed, so its views are not encoded (the ablations run at the cost
        # of what they train)
        query_views = (*(VIEWS if c.alpha > 0 else ("axial",)), *(("short",) if c.beta > 0 else ()))
        key_views = tuple(v for v in self.queues if v in query_views)
        queries, projections, features = {}, {}, {}
        for view in query_views:
            pooled = self.pooled_features(batch[view])
            projections[view] = self.projector(pooled)
            queries[view] = gather_with_local_grad(self.predictor(projections[view]))
            features[view] = pooled.detach()
        with torch.no_grad():
            keys = {view: gather_with_local_grad(self._target_keys(batch[view]).detach()) for view in key_views}
            negatives = {view: self.queues[view].contents()[0] if int(self.queues[view].num_filled) > 0 else None
                         for view in key_views}

        def term(x: str, y: str) -> tuple[torch.Tensor, torch.Tensor]:
            return self.loss(queries[x], keys[y], negatives[y]), retrieval_top1(queries[x], keys[y], negatives[y])

        loss, metrics = 0.0, {}
        if c.alpha > 0:
            pair_losses, top1 = {}, []
            for x, y in PAIRS:
                (loss_xy, top_xy), (loss_yx, top_yx) = term(x, y), term(y, x)
                pair_losses[f"{x}_{y}"] = (loss_xy + loss_yx) / 2
                top1 += [top_xy, top_yx]
            multiview = sum(pair_losses.values())
            loss = loss + c.alpha * multiview
            metrics |= {"loss_multiview": multiview.item(), **{f"loss_{n}": v.item() for n, v in pair_losses.items()},
                        "top1_multiview": torch.stack(top1).mean().item()}
        if c.beta > 0:
            long_short, top1_long_short = term("short", "axial")
            if c.symmetric_long_short:
                reverse, _ = term("axial", "short")
                long_short = (long_short + reverse) / 2
            loss = loss + c.beta * long_short
            metrics |= {"loss_long_short": long_short.item(), "top1_long_short": top1_long_short.item()}

        for view in key_views:
            self.queues[view].enqueue(keys[view])
        filled = int(self.queues["axial"].num_filled)
        candidates = len(keys["axial"]) if negatives["axial"] is None else len(negatives["axial"]) + 1
        long_views = [v for v in VIEWS if v in projections]
        # collapsed embeddings score every candidate alike: log(candidates) per InfoNCE term
        terms = (3 * c.alpha if c.alpha > 0 else 0.0) + (c.beta if c.beta > 0 else 0.0)
        top1_main = metrics["top1_multiview"] if "top1_multiview" in metrics else metrics["top1_long_short"]
        metrics = {"loss": loss.item(), **metrics, "top1_retrieval": top1_main, "top1_chance": 1.0 / candidates,
                   "loss_collapse": terms * infonce_collapse_loss(candidates),
                   "queue_fill": filled / self.queue_size,
                   "embedding_std": float(np.mean([normalised_std(gather_with_local_grad(projections[v].detach()))
                                                   for v in long_views])),
                   "feature_std": float(np.mean([normalised_std(gather_with_local_grad(features[v]))
                                                 for v in long_views])),
                   "feature_spread": float(np.mean([feature_spread(gather_with_local_grad(features[v]))
                                                    for v in long_views])),
                   "momentum": float(self.current_momentum)}
        return loss, metrics

    def after_optimizer_step(self, step: int, total_steps: int) -> None:
        """The momentum update ξ <- m ξ + (1 - m) θ of target encoder + projector [poster]."""
        m = self.config.momentum
        if self.config.final_momentum is not None:
            m = cosine_schedule(min(step, total_steps), total_steps, m, self.config.final_momentum)
        update_momentum(self._online_branch(), self.target, m)
        self.current_momentum = m

    def health_warnings(self, epoch_metrics: dict[str, float]) -> list[str]:
        """Set-up warnings (once), and collapse: the embeddings' per-dimension std (over a batch, after L2
        normalisation) is about 1/sqrt(D) when they spread over the sphere and 0 when they collapse."""
        messages, self._pending_warnings = self._pending_warnings, []
        std = epoch_metrics.get("embedding_std")
        reference = 1.0 / math.sqrt(self.config.projection_dim)
        if std is not None and std < self.config.collapse_std_ratio * reference:
            ratio = self.config.collapse_std_ratio
            messages.append(f"mlsscl: embedding std {std:.4f} is below {ratio} x "
                            f"1/sqrt({self.config.projection_dim}) = {ratio * reference:.4f}: "
                            "the embeddings are collapsing. Lower the learning rate, raise the momentum or the "
                            "batch size.")
        return messages


# The poster's ablation [poster: long-short only, multiview only, both] as methods of their own, so that
# each pretraining and each fine-tuning lands in its own folder (SSLPretrain_<method>__..., and
# -tr SSLInitTrainer_<method>) and the benchmark can run all three side by side.
@dataclass(frozen=True)
class MLSSCLMultiviewOnlyConfig(MLSSCLConfig):
    beta: float = 0.0


@dataclass(frozen=True)
class MLSSCLLongShortOnlyConfig(MLSSCLConfig):
    alpha: float = 0.0


class MLSSCLMultiviewOnly(MLSSCL):
    """MLSSCL without the long-short term (β = 0): the poster's "multiview only" ablation."""
    name = "mlsscl_multiview"
    config_class = MLSSCLMultiviewOnlyConfig


class MLSSCLLongShortOnly(MLSSCL):
    """MLSSCL without the multiview terms (α = 0): the poster's "long-short only" ablation."""
    name = "mlsscl_longshort"
    config_class = MLSSCLLongShortOnlyConfig
