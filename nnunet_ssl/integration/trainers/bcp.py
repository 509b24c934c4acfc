"""Bidirectional copy-paste (BCP; Bai et al., CVPR 2023; code DeepMed-Lab-ECNU/BCP) inside nnU-Net's step.

1. **Warm start** (the first WARM_START_FRACTION of the iterations): supervised copy-paste between labeled
   patches: a box of patch i - 1 (image and label) pasted into patch i, nnU-Net's loss on the result
   [code: BCP pre_train, which trains a separate model first; here the same run, same schedule].
2. At the end of the warm start the EMA teacher becomes a copy of the student (BCP loads the pretrained
   model into both).
3. **Self-training**: the teacher's argmax on the unlabeled patch (nnU-Net's weak view) is its pseudo-label.
   A box of the labeled patch goes into the unlabeled one, and the same box of the unlabeled patch into
   the labeled one; the student is supervised with the label where a voxel came from the labeled patch
   (weight 1) and with the pseudo-label where it came from the unlabeled one (weight UNLABELED_WEIGHT),
   each term nnU-Net's Dice + CE over its own voxels (BCP's ``mix_loss``). There is no other supervised
   loss, as in BCP.

Deep supervision: the mixed target (label and pseudo-label, the other side ignored) is downsampled to every
deep-supervision output exactly as nnU-Net downsamples its targets (nearest-exact), with nnU-Net's
weights. Not built: BCP's largest-connected-component filter on pseudo-labels. Defaults and sources:
docs/methods/bcp.md.
"""
from time import perf_counter

import numpy as np
import torch
from nnunetv2.utilities.helpers import dummy_context
from torch import autocast

from nnunet_ssl.blocks.mixing import COPY_PASTE_SIDE, boxes_for_batch, copy_paste_box, paste
from nnunet_ssl.blocks.pseudo_labels import agreement
from nnunet_ssl.integration.trainers.finetune import (SSLInitTrainer, SSLInitTrainer_decoderFirst,
                                                     SSLInitTrainer_lowEncoderLR, SSLScratchTrainer)
from nnunet_ssl.integration.trainers.semi_supervised import SemiSupervisedMixin
from nnunet_ssl.integration.trainers.unimatch import PseudoLabelMixin


class BCPMixin(PseudoLabelMixin, SemiSupervisedMixin):
    """Put before a MatchedScheduleTrainer subclass; the schedule, init and recipe stay the base's."""

    LOG_NAME = "bcp"
    METHOD_DOC = "bcp.md"
    # [code: BCP ACDC 10000 pre-training + 30000 self-training iterations = 1/4; LA 2000 + 15000 = 0.12]
    WARM_START_FRACTION: float = 0.25
    UNLABELED_WEIGHT: float = 0.5  # [code: BCP --u_weight 0.5]
    COPY_PASTE_SIDE: float = COPY_PASTE_SIDE  # [code: BCP, 2/3 of each side]
    EMA_DECAY: float = 0.99  # [code: BCP --ema_decay 0.99]
    HEALTH_THRESHOLD: float = 0.95  # only for the logged confident fraction; BCP's pseudo-label is the argmax

    def describe(self) -> str:
        return (f"supervised copy-paste warm start for {self.warm_start_iterations()} of {self.total_iterations()} "
                f"iterations, then bidirectional copy-paste (box {self.COPY_PASTE_SIDE:.3f} of each side) between "
                f"labeled and unlabeled patches, label weight 1, EMA-teacher pseudo-label (argmax) weight "
                f"{self.UNLABELED_WEIGHT}, EMA decay {self.EMA_DECAY}; unlabeled batch {self._unlabeled_batch_size()}")

    def _boxes(self, batch: int, spatial: tuple[int, ...]) -> torch.Tensor:
        return boxes_for_batch(lambda s, r: copy_paste_box(s, r, self.COPY_PASTE_SIDE), batch, spatial, self._rng,
                               self.device)

    def train_step(self, batch: dict) -> dict:
        start = perf_counter()
        data, target = self.labeled_to_device(batch)
        labels = (target[0] if isinstance(target, list) else target)[:, 0].long()
        step = self._iteration
        warm = self.in_warm_start(step)  # self-training starts from the warm-started student
        unwrap_single = (lambda x: x) if self.enable_deep_supervision else (lambda x: x[0])
        loss_fn, ignore = self.pseudo_label_loss(), self.ignore_value()

        self.optimizer.zero_grad(set_to_none=True)
        unlabeled_wait = teacher_seconds = 0.0
        health = {}
        with autocast(self.device.type, enabled=True) if self.device.type == "cuda" else dummy_context():
            boxes = self._boxes(data.shape[0], tuple(data.shape[2:]))
            if warm:  # a box of labeled patch i - 1 pasted into labeled patch i
                output = self.network(paste(data, data.roll(1, 0), boxes))
                loss = label_loss = loss_fn(output, self.targets_for_outputs(paste(labels, labels.roll(1, 0), boxes)))
                pseudo_loss = torch.zeros(())
            else:
                unlabeled, unlabeled_wait = self.next_unlabeled()
                unlabeled = unlabeled[:data.shape[0]] if unlabeled.shape[0] >= data.shape[0] else \
                    unlabeled[torch.arange(data.shape[0]) % unlabeled.shape[0]]
                teacher_start = perf_counter()
                pseudo, confident = self.teacher_pseudo_labels(unlabeled, self.HEALTH_THRESHOLD)
                self._sync()
                teacher_seconds = perf_counter() - teacher_start
                # unlabeled patch with a labeled box, and labeled patch with the unlabeled box [code: BCP]
                inputs = torch.cat((paste(unlabeled, data, boxes), paste(data, unlabeled, boxes)))
                from_labeled = torch.cat((boxes, ~boxes))  # where each voxel of the inputs came from
                mixed = torch.cat((paste(pseudo, labels, boxes), paste(labels, pseudo, boxes)))
                output = self.network(inputs)
                outputs = output if isinstance(output, (list, tuple)) else [output]
                label_loss = loss_fn(unwrap_single(outputs),
                                     self.targets_for_outputs(torch.where(from_labeled, mixed, ignore)))
                pseudo_loss = loss_fn(unwrap_single(outputs),
                                      self.targets_for_outputs(torch.where(from_labeled, ignore, mixed)))
                loss = label_loss + self.UNLABELED_WEIGHT * pseudo_loss
                with torch.no_grad():
                    student = outputs[0].argmax(1)
                    health = {**self.pseudo_label_health(pseudo.cpu(), confident.cpu(), target),
                              "agreement": np.float64(agreement(student, mixed, ~from_labeled))}

        self.optimizer_step(loss)
        # the EMA's true-average start counts from the teacher's copy at the end of the warm start
        decay, ema_seconds = self.ema_step(step - self.warm_start_iterations()) if not warm else (0.0, 0.0)
        self._iteration += 1
        classes = self.label_manager.num_segmentation_heads
        nan = np.full(classes, np.nan)
        return {"loss": label_loss.detach().cpu().numpy(), "pseudo_loss": np.float64(float(pseudo_loss.detach())),
                "warm_start": np.float64(warm), "agreement": health.get("agreement", np.float64(np.nan)),
                "confident_fraction": health.get("confident_fraction", nan),
                "labeled_fraction": health.get("labeled_fraction", nan),
                "ema_decay": np.float64(decay), "step_seconds": np.float64(perf_counter() - start),
                "unlabeled_wait_seconds": np.float64(unlabeled_wait), "teacher_seconds": np.float64(teacher_seconds),
                "ema_seconds": np.float64(ema_seconds)}

    def log_epoch(self, mean: dict) -> None:
        if mean["warm_start"] == 1.0:
            self.print_to_log_file(f"{self.LOG_NAME}: warm start (supervised copy-paste between labeled patches); "
                                   f"train step {mean['step_seconds']:.3f} s")
            return
        self.print_to_log_file(
            f"{self.LOG_NAME}: pseudo-label loss {mean['pseudo_loss']:.4f} x {self.UNLABELED_WEIGHT}; "
            f"{self.health_text(mean)} (confident = teacher probability >= {self.HEALTH_THRESHOLD}); student-teacher "
            f"agreement on pseudo-labeled voxels {mean['agreement']:.3f}; {self.timing_text(mean)}")
        self.warn_on_collapse(mean)


class SSLBCPTrainer(BCPMixin, SSLScratchTrainer):
    """Bidirectional copy-paste from random init, on SSLScratchTrainer's schedule."""


class SSLInitBCPTrainer(BCPMixin, SSLInitTrainer):
    """Bidirectional copy-paste from a pretrained encoder (loaded as SSLInitTrainer does)."""


class SSLInitBCPTrainer_decoderFirst(BCPMixin, SSLInitTrainer_decoderFirst):
    """Bidirectional copy-paste with SSLInitTrainer_decoderFirst's encoder learning rates."""


class SSLInitBCPTrainer_lowEncoderLR(BCPMixin, SSLInitTrainer_lowEncoderLR):
    """Bidirectional copy-paste with SSLInitTrainer_lowEncoderLR's encoder learning rates."""
