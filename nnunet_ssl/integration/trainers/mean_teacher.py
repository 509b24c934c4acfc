"""Mean-teacher fine-tuning: nnU-Net's supervised step plus a consistency loss on unlabeled patches.

An EMA copy of the whole network (the teacher) predicts on unlabeled patches with Gaussian noise
added; the student (nnU-Net's network, trained by SGD) must agree with it at full resolution. The
supervised loss (Dice + CE with deep supervision) is nnU-Net's, unchanged. The teacher is what is
validated, saved as ``network_weights`` and predicted with; the student stays in the checkpoint for
``--c`` (semi_supervised.py, shared with the other semi-supervised trainers). Defaults and their
sources: docs/methods/mean_teacher.md.
"""
from time import perf_counter

import numpy as np
import torch
from batchgeneratorsv2.transforms.utils.compose import ComposeTransforms
from nnunetv2.utilities.helpers import dummy_context
from torch import autocast

from nnunet_ssl.blocks.consistency import (consistency_share, consistency_weight, probability_mse,
                                           teacher_input_noise)
from nnunet_ssl.data.strong_views import AppendStrongViews, StrongIntensity, split_views
from nnunet_ssl.integration.trainers.finetune import (SSLInitTrainer, SSLInitTrainer_decoderFirst,
                                                     SSLInitTrainer_lowEncoderLR, SSLScratchTrainer)
from nnunet_ssl.integration.trainers.semi_supervised import SemiSupervisedMixin

CASES_FILE = "mean_teacher_cases.json"  # in the fold folder: labeled / validation / unlabeled case ids


class MeanTeacherMixin(SemiSupervisedMixin):
    """Put before a MatchedScheduleTrainer subclass; the schedule, init and recipe stay the base's."""

    LOG_NAME = "mean teacher"
    CASES_FILE = CASES_FILE
    CONSISTENCY_MAX_WEIGHT: float = 0.1  # [code: yulequan/UA-MT --consistency 0.1]
    TEACHER_NOISE_STD: float = 0.1  # [code: yulequan/UA-MT, clamp(randn * 0.1, -0.2, 0.2)]
    TEACHER_NOISE_CLIP: float = 0.2  # [code: yulequan/UA-MT]
    # False: the student sees the teacher's patch without noise (UA-MT); True: a strong intensity view of it
    # (data/strong_views.py, UniMatch's), the weak-to-strong perturbation applied to the mean teacher
    STUDENT_STRONG_VIEW: bool = False

    def describe(self) -> str:
        return (f"EMA decay {self.EMA_DECAY}" + (f" ({self.EMA_DECAY_AFTER_RAMPUP} after the ramp-up)"
                                                 if self.EMA_DECAY_AFTER_RAMPUP is not None else "")
                + f", consistency = MSE of class probabilities at full resolution, weight up to "
                f"{self.CONSISTENCY_MAX_WEIGHT} by a sigmoid ramp over {self.rampup_iterations()} of "
                f"{self.total_iterations()} iterations, teacher input noise N(0, {self.TEACHER_NOISE_STD}^2) clipped "
                f"at {self.TEACHER_NOISE_CLIP}, unlabeled batch {self._unlabeled_batch_size()}"
                + (", the student sees a strong intensity view (data/strong_views.py)" if self.STUDENT_STRONG_VIEW
                   else ""))

    def unlabeled_transforms(self):
        transforms = super().unlabeled_transforms()
        if not self.STUDENT_STRONG_VIEW:
            return transforms
        return ComposeTransforms([transforms, AppendStrongViews(StrongIntensity().transforms(), 1)])

    def train_step(self, batch: dict) -> dict:
        """nnUNetTrainer.train_step with the unlabeled half: one student forward over labeled and
        unlabeled patches (InstanceNorm is per sample, so this equals two forwards), nnU-Net's loss on
        the labeled part, the weighted consistency on the unlabeled part, then the EMA update."""
        start = perf_counter()
        unlabeled, unlabeled_wait = self.next_unlabeled()
        student_view = unlabeled
        if self.STUDENT_STRONG_VIEW:
            unlabeled, student_view = split_views(unlabeled, self.num_input_channels)
        data, target = self.labeled_to_device(batch)
        step = self._iteration
        weight = consistency_weight(step, self.CONSISTENCY_MAX_WEIGHT, self.rampup_iterations())

        self.optimizer.zero_grad(set_to_none=True)
        with autocast(self.device.type, enabled=True) if self.device.type == "cuda" else dummy_context():
            teacher_start = perf_counter()
            with torch.no_grad():
                teacher_output = self._teacher_forward(
                    teacher_input_noise(unlabeled, self.TEACHER_NOISE_STD, self.TEACHER_NOISE_CLIP))
            self._sync()
            teacher_seconds = perf_counter() - teacher_start
            output = self.network(torch.cat((data, student_view)))
            n = data.shape[0]
            if isinstance(output, (list, tuple)):  # deep supervision: consistency at full resolution only
                supervised_loss = self.loss([o[:n] for o in output], target)
                student_unlabeled, teacher_output = output[0][n:], teacher_output[0]
            else:
                supervised_loss = self.loss(output[:n], target)
                student_unlabeled = output[n:]
            consistency = probability_mse(self._probabilities(student_unlabeled), self._probabilities(teacher_output))
            loss = supervised_loss + weight * consistency

        self.optimizer_step(loss)
        decay, ema_seconds = self.ema_step(step)
        self._iteration += 1
        weighted = weight * float(consistency.detach())
        # 'loss' is nnU-Net's supervised loss, comparable with plain fine-tuning; the consistency is logged apart
        return {"loss": supervised_loss.detach().cpu().numpy(), "consistency": consistency.detach().cpu().numpy(),
                "consistency_weight": np.float64(weight), "ema_decay": np.float64(decay),
                "consistency_share": np.float64(consistency_share(float(supervised_loss.detach()), weighted)),
                "step_seconds": np.float64(perf_counter() - start),
                "unlabeled_wait_seconds": np.float64(unlabeled_wait),
                "teacher_seconds": np.float64(teacher_seconds), "ema_seconds": np.float64(ema_seconds)}

    def log_epoch(self, mean: dict) -> None:
        self.print_to_log_file(
            f"mean teacher: consistency {mean['consistency']:.5f} x weight {mean['consistency_weight']:.4f} "
            f"(share of the loss {mean['consistency_share']:.2e}), "
            f"EMA decay {mean['ema_decay']:.4f}; train step {mean['step_seconds']:.3f} s, of which unlabeled batch "
            f"wait {mean['unlabeled_wait_seconds']:.3f} s, teacher forward {mean['teacher_seconds']:.3f} s, "
            f"EMA update {mean['ema_seconds']:.4f} s (the student's unlabeled half is inside its forward/backward)")


class SSLMeanTeacherTrainer(MeanTeacherMixin, SSLScratchTrainer):
    """Mean teacher from random init, on SSLScratchTrainer's schedule: the semi-supervised control."""


class SSLInitMeanTeacherTrainer(MeanTeacherMixin, SSLInitTrainer):
    """Mean teacher from a pretrained encoder (loaded as SSLInitTrainer does; the teacher starts as its copy)."""


class SSLInitMeanTeacherTrainer_decoderFirst(MeanTeacherMixin, SSLInitTrainer_decoderFirst):
    """Mean teacher with SSLInitTrainer_decoderFirst's encoder learning rates."""


class SSLInitMeanTeacherTrainer_lowEncoderLR(MeanTeacherMixin, SSLInitTrainer_lowEncoderLR):
    """Mean teacher with SSLInitTrainer_lowEncoderLR's encoder learning rates."""


# Recipes that make the consistency term matter (issue 35): attribute-only mixins, stackable in a name
# (SSLMeanTeacherTrainer_weight10_shortRampup_strongView_cpu4000it) so that weight, ramp and perturbation
# can be chosen on folds that are not reported. With UA-MT's defaults the term ended at 1e-5 to 1e-4 of the
# loss on hippocampus (docs/methods/mean_teacher.md): the weights below span 10x to 1000x UA-MT's.
class ConsistencyWeight1:
    """Consistency weight up to 1 [assumption: 10 x UA-MT's 0.1]."""
    CONSISTENCY_MAX_WEIGHT = 1.0


class ConsistencyWeight10:
    """Consistency weight up to 10 [assumption: 100 x UA-MT's 0.1]."""
    CONSISTENCY_MAX_WEIGHT = 10.0


class ConsistencyWeight100:
    """Consistency weight up to 100 [assumption: 1000 x UA-MT's 0.1]."""
    CONSISTENCY_MAX_WEIGHT = 100.0


class ShortRampup:
    """The sigmoid ramp-up over the first quarter of training instead of all of it [assumption; Tarvainen &
    Valpola ramp up over an early part of training only]."""
    CONSISTENCY_RAMPUP_FRACTION = 0.25


class StrongStudentView:
    """The student sees a strong intensity view of the teacher's patch (UniMatch's, data/strong_views.py)
    instead of the same patch: the weak-to-strong perturbation with the mean teacher's consistency."""
    STUDENT_STRONG_VIEW = True


MEAN_TEACHER_VARIANTS = {"weight1": ConsistencyWeight1, "weight10": ConsistencyWeight10,
                         "weight100": ConsistencyWeight100, "shortRampup": ShortRampup,
                         "strongView": StrongStudentView}
