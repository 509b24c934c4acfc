"""Weak-to-strong pseudo-labelling (FixMatch / UniMatch family) inside nnU-Net's training step.

The teacher predicts on nnU-Net's augmented unlabeled patch (the weak view); voxels whose largest class
probability reaches CONFIDENCE_THRESHOLD become pseudo-labels. The student learns them

- on STRONG_VIEWS strongly perturbed copies of the same patch: intensity perturbations made in the data
  loader after nnU-Net's transforms (data/strong_views.py; no geometry, so every pseudo-label stays on
  its voxel), then CutMix with another unlabeled patch of the batch, whose pseudo-labels and confidence
  are pasted with the same box (blocks/mixing.py);
- on the weak view through a feature-perturbation stream: channel dropout (p = 0.5) on every encoder
  feature map the decoder receives (UniMatch's FP stream).

Which teacher: an **EMA teacher**, not the student without gradient (UniMatch's choice). nnU-Net
trains with 2 patches per batch and SGD at lr 1e-2 with momentum 0.99, so the student's predictions move
a lot from one step to the next; the EMA averages about the last 1 / (1 - 0.99) = 100 students, so its
pseudo-labels change slowly and a single bad step does not turn into confident wrong labels
(Tarvainen & Valpola's argument for the mean teacher). UniMatch trains with 8 + 8 images per batch on
one network. The EMA also makes this trainer share the mean teacher's machinery (semi_supervised.py:
the teacher is the model that is validated, saved and predicted with), at the cost of one forward
without gradient, which the student's own clean weak forward would cost anyway [assumption].

Loss: nnU-Net's supervised loss + ramp(t) * (STRONG_VIEW_WEIGHT * sum over strong views +
FEATURE_PERTURBATION_WEIGHT * the FP stream) of nnU-Net's Dice + CE on the confident voxels
(unconfident ones are ignored, as nnU-Net ignores its ignore label). Deep supervision: the pseudo-label
map, with unconfident voxels set to the ignored value, is downsampled to every deep-supervision output
exactly as nnU-Net downsamples its targets (nearest-exact, DownsampleSegForDSTransform), and the losses
carry nnU-Net's deep-supervision weights. Defaults and sources: docs/methods/unimatch.md.
"""
from functools import wraps
from time import perf_counter

import numpy as np
import torch
from batchgeneratorsv2.transforms.utils.compose import ComposeTransforms
from nnunetv2.utilities.helpers import dummy_context
from torch import autocast

from nnunet_ssl.blocks.consistency import sigmoid_rampup
from nnunet_ssl.blocks.mixing import boxes_for_batch, cutmix_box, paste
from nnunet_ssl.blocks.pseudo_labels import (COLLAPSE_MIN_BACKGROUND, COLLAPSE_RATIO, SkipFeatureDropout, agreement,
                                             class_fractions, collapsed_classes)
from nnunet_ssl.data.strong_views import AppendStrongViews, StrongIntensity, split_views
from nnunet_ssl.errors import SSLUserError
from nnunet_ssl.integration.trainers.finetune import (SSLInitTrainer, SSLInitTrainer_decoderFirst,
                                                     SSLInitTrainer_lowEncoderLR, SSLScratchTrainer)
from nnunet_ssl.integration.trainers.semi_supervised import SemiSupervisedMixin, user_error


class PseudoLabelMixin:
    """What the pseudo-labelling trainers (UniMatch, BCP) share: one class per voxel (region-based training is
    refused), a random generator for their boxes, and what they log per epoch without labels of the unlabeled
    cases. Put before SemiSupervisedMixin."""

    def initialize(self):
        if self.label_manager.has_regions:
            raise user_error(SSLUserError(
                f"{type(self).__name__} does not support region-based training: pseudo-labels are one class per "
                f"voxel.", "use SSLMeanTeacherTrainer (probability consistency works with regions)"))
        super().initialize()

    def on_train_start(self):
        super().on_train_start()
        self._rng = np.random.default_rng()  # nnU-Net does not seed training; boxes follow suit

    def timing_text(self, mean: dict) -> str:
        return (f"train step {mean['step_seconds']:.3f} s, of which unlabeled batch wait "
                f"{mean['unlabeled_wait_seconds']:.3f} s, teacher {mean['teacher_seconds']:.3f} s, EMA "
                f"{mean['ema_seconds']:.4f} s")

    def pseudo_label_health(self, labels: torch.Tensor, confident: torch.Tensor, target) -> dict:
        """Per-class confident fraction of the unlabeled voxels, and each class's fraction in the labeled
        patches (the reference of the collapse rule; the labeled cases' own labels)."""
        classes = self.label_manager.num_segmentation_heads
        full = target[0] if isinstance(target, list) else target
        return {"confident_fraction": class_fractions(labels, classes, confident).cpu().numpy(),
                "labeled_fraction": class_fractions(full[:, 0].long().clamp(0, classes), classes).cpu().numpy()}

    def health_text(self, mean: dict) -> str:
        confident = [float(v) for v in mean["confident_fraction"]]
        return (f"confident {sum(confident):.3f} of unlabeled voxels (per class "
                + ", ".join(f"{c}: {v:.4f}" for c, v in enumerate(confident))
                + "; labeled patches " + ", ".join(f"{c}: {float(v):.4f}" for c, v in enumerate(mean["labeled_fraction"]))
                + ")")

    def warn_on_collapse(self, mean: dict) -> None:
        collapsed = collapsed_classes([float(v) for v in mean["confident_fraction"]],
                                      [float(v) for v in mean["labeled_fraction"]])
        if collapsed:
            self.print_to_log_file(
                f"WARNING {self.LOG_NAME}: pseudo-labels collapse toward background for class(es) {collapsed}: "
                f"confidently labeled on less than {COLLAPSE_RATIO} x their fraction of the labeled patches "
                f"this epoch while background is confident on >= {COLLAPSE_MIN_BACKGROUND} of the unlabeled voxels "
                f"(docs/methods/{self.METHOD_DOC})")


class UniMatchMixin(PseudoLabelMixin, SemiSupervisedMixin):
    """Put before a MatchedScheduleTrainer subclass; the schedule, init and recipe stay the base's."""

    LOG_NAME = "unimatch"
    METHOD_DOC = "unimatch.md"
    CONFIDENCE_THRESHOLD: float = 0.95  # [paper: FixMatch tau = 0.95; code: UniMatch ACDC conf_thresh 0.95]
    STRONG_VIEWS: int = 2  # [paper/code: UniMatch, two strong views per unlabeled image]
    # per strong view and for the FP stream; UniMatch's loss is (L_x + 0.25 L_s1 + 0.25 L_s2 + 0.5 L_fp) / 2
    # [code: UniMatch unimatch.py]: the same ratios with nnU-Net's supervised loss kept at weight 1, so its
    # learning rate means what it means for every other arm
    STRONG_VIEW_WEIGHT: float = 0.25
    FEATURE_PERTURBATION_WEIGHT: float = 0.5  # 0: no FP stream (FixMatch)
    FEATURE_DROPOUT: float = 0.5  # [code: UniMatch nn.Dropout2d(0.5) on the encoder features]
    CUTMIX_PROBABILITY: float = 0.5  # [code: UniMatch obtain_cutmix_box(p=0.5)]
    # no ramp-up by default: confident pseudo-labels are few while the teacher is unsure [code: UniMatch, FixMatch]
    CONSISTENCY_RAMPUP_FRACTION: float = 0.0
    EMA_DECAY: float = 0.99  # [assumption: the mean teacher's 0.99; UniMatch has no EMA]

    def initialize(self):
        # the FP stream's hook goes on the student's decoder as soon as it is built: before torch.compile
        # (which does not see hooks added later) and before DDP; the hook object's state decides what it does
        self.skip_dropout = SkipFeatureDropout(self.FEATURE_DROPOUT)
        build = self.build_network_architecture  # the class's, or SSLInitTrainer's instance hook

        @wraps(build)  # nnU-Net inspects the signature to choose how to call it
        def build_with_feature_perturbation(*args, **kwargs):
            network = build(*args, **kwargs)
            network.decoder.register_forward_pre_hook(self.skip_dropout)
            return network

        self.build_network_architecture = build_with_feature_perturbation
        super().initialize()
        self.teacher.decoder._forward_pre_hooks.clear()  # the EMA copy took the hook along: the teacher has none

    def describe(self) -> str:
        return ((f"supervised warm start for {self.warm_start_iterations()} iterations, then " if
                 self.warm_start_iterations() else "")
                + f"EMA teacher (decay {self.EMA_DECAY}) pseudo-labels the weak view where its largest probability "
                f">= {self.CONFIDENCE_THRESHOLD}; the student learns them on {self.STRONG_VIEWS} strong view(s) "
                f"(intensity, then CutMix with p {self.CUTMIX_PROBABILITY}) at weight {self.STRONG_VIEW_WEIGHT} each"
                + (f" and on the weak view with feature dropout {self.FEATURE_DROPOUT} at weight "
                   f"{self.FEATURE_PERTURBATION_WEIGHT}" if self.FEATURE_PERTURBATION_WEIGHT else "")
                + f", nnU-Net's Dice + CE on confident voxels at every deep-supervision output; weight ramp over "
                f"{self.rampup_iterations()} of {self.total_iterations()} iterations; unlabeled batch "
                f"{self._unlabeled_batch_size()}")

    def unlabeled_transforms(self):
        return ComposeTransforms([super().unlabeled_transforms(),
                                  AppendStrongViews(StrongIntensity().transforms(), self.STRONG_VIEWS)])

    def train_step(self, batch: dict) -> dict:
        start = perf_counter()
        step = self._iteration
        if self.in_warm_start(step):
            return self.warm_start_step(batch, start)
        unlabeled, unlabeled_wait = self.next_unlabeled()
        weak, *strong = split_views(unlabeled, self.num_input_channels)
        data, target = self.labeled_to_device(batch)
        n, b = data.shape[0], weak.shape[0]
        after_warm_start = step - self.warm_start_iterations()  # the ramp and the EMA's average start there
        ramp = sigmoid_rampup(after_warm_start, self.rampup_iterations())

        self.optimizer.zero_grad(set_to_none=True)
        with autocast(self.device.type, enabled=True) if self.device.type == "cuda" else dummy_context():
            teacher_start = perf_counter()
            labels, confident = self.teacher_pseudo_labels(weak, self.CONFIDENCE_THRESHOLD)
            with torch.no_grad():
                # CutMix partner of sample i: sample i - 1 of the same batch (itself when the batch is 1)
                mixed = []
                for view in strong:
                    boxes = boxes_for_batch(lambda s, r: cutmix_box(s, r, self.CUTMIX_PROBABILITY), b,
                                            tuple(weak.shape[2:]), self._rng, self.device)
                    mixed.append((paste(view, view.roll(1, 0), boxes), paste(labels, labels.roll(1, 0), boxes),
                                  paste(confident, confident.roll(1, 0), boxes)))
            self._sync()
            teacher_seconds = perf_counter() - teacher_start

            fp = self.FEATURE_PERTURBATION_WEIGHT > 0
            inputs = [data, *(m[0] for m in mixed)] + ([weak] if fp else [])
            self.skip_dropout.samples = slice(n + b * len(mixed), n + b * (len(mixed) + 1)) if fp else None
            try:
                output = self.network(torch.cat(inputs))
            finally:
                self.skip_dropout.samples = None
            outputs = output if isinstance(output, (list, tuple)) else [output]
            part = lambda i: [o[n + i * b:n + (i + 1) * b] for o in outputs]  # noqa: E731 (i-th unlabeled part)
            unwrap_single = (lambda x: x) if isinstance(output, (list, tuple)) else (lambda x: x[0])
            supervised_loss = self.loss(unwrap_single([o[:n] for o in outputs]), target)
            pl_loss, ignore = self.pseudo_label_loss(), self.ignore_value()
            strong_losses = [pl_loss(unwrap_single(part(i)), self.targets_for_outputs(torch.where(c, lab, ignore)))
                             for i, (_, lab, c) in enumerate(mixed)]
            fp_loss = pl_loss(unwrap_single(part(len(mixed))),
                              self.targets_for_outputs(torch.where(confident, labels, ignore))) if fp \
                else torch.zeros((), device=self.device)
            unsupervised = self.STRONG_VIEW_WEIGHT * sum(strong_losses) + self.FEATURE_PERTURBATION_WEIGHT * fp_loss
            loss = supervised_loss + ramp * unsupervised

        self.optimizer_step(loss)
        decay, ema_seconds = self.ema_step(after_warm_start)
        self._iteration += 1
        with torch.no_grad():
            student_labels = outputs[0][n:n + b].argmax(1)  # the first strong view, against its mixed pseudo-labels
            _, mixed_labels, mixed_confident = mixed[0]
            health = self.pseudo_label_health(labels.cpu(), confident.cpu(), target)
        return {"loss": supervised_loss.detach().cpu().numpy(), "warm_start": np.float64(0.0),
                "strong_loss": np.float64(sum(float(s.detach()) for s in strong_losses) / len(strong_losses)),
                "fp_loss": np.float64(float(fp_loss.detach())), "ramp": np.float64(ramp),
                "agreement": np.float64(agreement(student_labels, mixed_labels)),
                "agreement_confident": np.float64(agreement(student_labels, mixed_labels, mixed_confident)),
                **health, "ema_decay": np.float64(decay), "step_seconds": np.float64(perf_counter() - start),
                "unlabeled_wait_seconds": np.float64(unlabeled_wait), "teacher_seconds": np.float64(teacher_seconds),
                "ema_seconds": np.float64(ema_seconds)}

    def warm_start_step(self, batch: dict, start: float) -> dict:
        """nnU-Net's supervised step on the labeled batch alone (no unlabeled batch is drawn, no teacher runs);
        the teacher follows the student by EMA, so the validation log stays meaningful, and becomes its copy
        when the warm start ends (``in_warm_start``)."""
        data, target = self.labeled_to_device(batch)
        self.optimizer.zero_grad(set_to_none=True)
        with autocast(self.device.type, enabled=True) if self.device.type == "cuda" else dummy_context():
            loss = self.loss(self.network(data), target)
        self.optimizer_step(loss)
        decay, ema_seconds = self.ema_step(self._iteration)
        self._iteration += 1
        nan = np.full(self.label_manager.num_segmentation_heads, np.nan)
        return {"loss": loss.detach().cpu().numpy(), "warm_start": np.float64(1.0), "strong_loss": np.float64(0.0),
                "fp_loss": np.float64(0.0), "ramp": np.float64(0.0), "agreement": np.float64(np.nan),
                "agreement_confident": np.float64(np.nan), "confident_fraction": nan, "labeled_fraction": nan,
                "ema_decay": np.float64(decay), "step_seconds": np.float64(perf_counter() - start),
                "unlabeled_wait_seconds": np.float64(0.0), "teacher_seconds": np.float64(0.0),
                "ema_seconds": np.float64(ema_seconds)}

    def log_epoch(self, mean: dict) -> None:
        if mean["warm_start"] == 1.0:
            self.print_to_log_file(f"{self.LOG_NAME}: warm start (supervised only, {self.warm_start_iterations()} "
                                   f"iterations); train step {mean['step_seconds']:.3f} s")
            return
        self.print_to_log_file(
            f"{self.LOG_NAME}: strong-view loss {mean['strong_loss']:.4f}, FP loss {mean['fp_loss']:.4f}, ramp "
            f"{mean['ramp']:.3f}; {self.health_text(mean)}; student-teacher agreement {mean['agreement']:.3f} "
            f"({mean['agreement_confident']:.3f} on confident voxels); {self.timing_text(mean)}")
        self.warn_on_collapse(mean)


class FixMatchRecipe:
    """FixMatch's weak-to-strong consistency: one strong view at weight 1, no feature-perturbation stream
    [paper: FixMatch, lambda_u = 1, one strong augmentation]; CutMix and the threshold stay."""

    STRONG_VIEWS = 1
    STRONG_VIEW_WEIGHT = 1.0
    FEATURE_PERTURBATION_WEIGHT = 0.0


class WarmStart:
    """A supervised warm start over the first quarter of training before pseudo-labelling [assumption: BCP's ACDC
    split of 10000 supervised + 30000 semi-supervised iterations, code]. From random init the teacher's confident
    pseudo-labels held no RV or LV voxel for 16 epochs on ACDC (docs/records/acdc_fixmatch_first_epochs_2026-12-07)."""
    WARM_START_FRACTION = 0.25


class SSLUniMatchTrainer(UniMatchMixin, SSLScratchTrainer):
    """Weak-to-strong pseudo-labelling from random init, on SSLScratchTrainer's schedule."""


class SSLUniMatchTrainer_fixMatch(FixMatchRecipe, SSLUniMatchTrainer):
    """SSLUniMatchTrainer with FixMatch's single strong view and no FP stream."""


class SSLInitUniMatchTrainer(UniMatchMixin, SSLInitTrainer):
    """Weak-to-strong pseudo-labelling from a pretrained encoder (loaded as SSLInitTrainer does)."""


class SSLInitUniMatchTrainer_fixMatch(FixMatchRecipe, SSLInitUniMatchTrainer):
    """SSLInitUniMatchTrainer with FixMatch's single strong view and no FP stream."""


class SSLInitUniMatchTrainer_decoderFirst(UniMatchMixin, SSLInitTrainer_decoderFirst):
    """Weak-to-strong pseudo-labelling with SSLInitTrainer_decoderFirst's encoder learning rates."""


class SSLInitUniMatchTrainer_lowEncoderLR(UniMatchMixin, SSLInitTrainer_lowEncoderLR):
    """Weak-to-strong pseudo-labelling with SSLInitTrainer_lowEncoderLR's encoder learning rates."""
