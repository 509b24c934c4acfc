"""Label-free health of contrastive pretraining: pure functions on embeddings, losses and weights.

Used by the methods (per-step metrics), the pretraining loop (the end-of-run verdict), the health
probe (nnUNetv2_ssl_health) and the encoder loader (weight scale). No labels, no Dice.
"""
import math

import torch
import torch.nn.functional as F
from torch import nn

# --- the verdict's thresholds [assumption, issue 10]: a run that learned ends with its loss clearly
# below the value of collapsed embeddings or with retrieval clearly above chance. Measured failing run:
# loss 4.84-4.90 against a collapse value of 4.906 (ratio 0.987-0.999); learning hippocampus runs end
# at ratio <= 0.8 (docs/methods/readouts.md).
MAX_LOSS_RATIO = 0.95  # loss / collapse value at or above this: "not clearly below"
MIN_RETRIEVAL_GAIN = 0.1  # (top1 - chance) / (1 - chance) below this: "at chance"


def normalised_std(embeddings: torch.Tensor) -> float:
    """Mean over dimensions of the batch std of L2-normalised embeddings (N, D): about 1/sqrt(D) when they
    spread over the sphere, 0 when every sample maps to the same direction."""
    if embeddings.shape[0] < 2:
        return float("nan")
    return F.normalize(embeddings.float(), dim=1).std(dim=0).mean().item()


def feature_spread(pooled: torch.Tensor) -> float:
    """Across-sample std relative to magnitude of pooled features (N, C): mean over channels of the std over
    samples, divided by the root mean square of all values. 0: every sample gives the same vector."""
    if pooled.shape[0] < 2:
        return float("nan")
    x = pooled.detach().float()
    rms = x.pow(2).mean().sqrt().item()
    return x.std(dim=0).mean().item() / rms if rms > 0 else 0.0


def supcon_collapse_loss(num_embeddings: int, num_keys: int = 0, scale: float = 1.0) -> float:
    """SupCon's loss when all embeddings are equal: every logit is the same, so each log-probability is
    -log(N - 1 + K), whatever the positives."""
    return scale * math.log(num_embeddings - 1 + num_keys)


def infonce_collapse_loss(num_candidates: int) -> float:
    """InfoNCE's loss when the query is equally similar to its key and every negative: log(candidates)."""
    return math.log(num_candidates)


def learning_verdict(loss: float, collapse_loss: float | None, top1: float | None, chance: float | None) -> dict:
    """Whether a pretraining learned, from its last epoch: ``learned`` when the loss is clearly below the
    collapse value or retrieval clearly above chance; ``no_learning`` otherwise. ``collapse_loss`` None: the
    loss has no collapse value (BYOL's is 0 when collapsed), so retrieval alone decides."""
    gain = None
    if top1 is not None and chance is not None and chance < 1:
        gain = (top1 - chance) / (1 - chance)
    if collapse_loss is None and gain is None:
        raise ValueError("learning_verdict needs a collapse value or a retrieval against chance")
    reasons = []
    ratio = None
    loss_ok = False
    if collapse_loss is not None:
        ratio = loss / collapse_loss if collapse_loss > 0 else float("nan")
        loss_ok = ratio < MAX_LOSS_RATIO
        reasons.append(f"loss {loss:.3f} = {ratio:.3f} x its collapse value {collapse_loss:.3f} "
                       f"({'below' if loss_ok else 'not below'} {MAX_LOSS_RATIO})")
    retrieval_ok = gain is not None and gain >= MIN_RETRIEVAL_GAIN
    if gain is not None:
        reasons.append(f"top-1 retrieval {top1:.3f} against chance {chance:.3f} (gain {gain:.3f}, "
                       f"{'above' if retrieval_ok else 'not above'} {MIN_RETRIEVAL_GAIN})")
    verdict = "learned" if loss_ok or retrieval_ok else "no_learning"
    return {"verdict": verdict, "loss": loss, "collapse_loss": collapse_loss, "loss_ratio": ratio,
            "top1_retrieval": top1, "top1_chance": chance, "reason": "; ".join(reasons),
            "thresholds": {"max_loss_ratio": MAX_LOSS_RATIO, "min_retrieval_gain": MIN_RETRIEVAL_GAIN}}


# --- pretraining length from health curves [issue 10 item 4, issue 12 item 4]: the fine-tuning plateau's
# doubling rule (benchmark/statistics.plateau_length) applied to label-free curves that rise while a method
# learns. Per-epoch values are averaged over a trailing window, since one epoch of 20-25 steps is noisy.
HEALTH_PLATEAU_GAIN = 0.01  # [assumption] a doubling of the epochs must move a curve by this much
HEALTH_SMOOTHING_EPOCHS = 3  # [assumption] trailing window of the per-epoch curves


def doubling_plateau(curve: dict[int, float], gain: float) -> int | None:
    """The shortest length L (a key of ``curve``) whose doubling 2L, also measured, raises the curve by less
    than ``gain``, and from which every later measured doubling does too: a flat stretch that the curve
    climbs out of again is no plateau (a PCL run's health curves dipped at epochs 5-10 and rose until
    its end, docs/methods/readouts.md). None while the last measured doubling still raises it more."""
    doublings = [length for length in sorted(curve) if 2 * length in curve]
    plateau = None
    for length in doublings:
        if curve[2 * length] - curve[length] >= gain:
            plateau = None
        elif plateau is None:
            plateau = length
    return plateau


# what a reconstruction network that learned nothing scores: predicting 0 (the mean intensity; MAE: in the
# masked blocks), or (Models Genesis) returning its corrupted input unchanged. The margin is taken to the
# smallest of them: Genesis' outpainting fills most of a patch with noise, so returning the input scores
# about 11x worse than predicting 0 on hippocampus, and a margin to it alone is reached in a few epochs
TRIVIAL_LOSSES = ("loss_predict_zero", "loss_return_input")


def health_curves(history: list[dict]) -> dict[str, list[float]]:
    """Per-epoch curves that rise while a method learns, from a pretraining's history (progress.json):
    ``collapse_margin`` = 1 - loss / collapse value, ``retrieval_gain`` = (top-1 - chance) / (1 - chance),
    and for reconstruction ``baseline_margin`` = 1 - loss / the smallest trivial loss logged (TRIVIAL_LOSSES).
    A curve is left out when an epoch lacks its metrics."""
    curves = {}
    if history and all("loss" in h and h.get("loss_collapse", 0) > 0 for h in history):
        curves["collapse_margin"] = [1 - h["loss"] / h["loss_collapse"] for h in history]
    logged = [t for t in TRIVIAL_LOSSES if history and all("loss" in h and h.get(t, 0) > 0 for h in history)]
    if logged:
        curves["baseline_margin"] = [1 - h["loss"] / min(h[t] for t in logged) for h in history]
    if history and all("top1_retrieval" in h and 0 <= h.get("top1_chance", 1) < 1 for h in history):
        curves["retrieval_gain"] = [(h["top1_retrieval"] - h["top1_chance"]) / (1 - h["top1_chance"])
                                    for h in history]
    return curves


def trailing_mean(values: list[float], window: int = HEALTH_SMOOTHING_EPOCHS) -> list[float]:
    return [sum(values[max(0, i + 1 - window):i + 1]) / (i + 1 - max(0, i + 1 - window)) for i in range(len(values))]


def health_plateau(history: list[dict], gain: float = HEALTH_PLATEAU_GAIN) -> dict:
    """Where a pretraining's health curves stop rising: per curve, the shortest epoch (from the smoothing
    window's length on) whose doubling (also run) adds less than ``gain`` to the smoothed curve;
    ``plateau_epoch`` is the latest of them (None when a curve is still rising at the end, or there is no
    curve). ``still_rising`` names those curves; ``too_short``: fewer epochs than one doubling of the
    smoothing window, so nothing can be told."""
    per_curve, rising = {}, []
    for name, values in health_curves(history).items():
        smoothed = trailing_mean(values)
        # from the first full window on: earlier "doublings" are a single epoch or two
        found = doubling_plateau({epoch: v for epoch, v in enumerate(smoothed, start=1)
                                  if epoch >= HEALTH_SMOOTHING_EPOCHS}, gain)
        per_curve[name] = found
        if found is None:
            rising.append(name)
    plateau = max(per_curve.values()) if per_curve and not rising else None
    return {"plateau_epoch": plateau, "epochs": len(history), "per_curve": per_curve, "still_rising": rising,
            "gain": gain, "too_short": len(history) < 2 * HEALTH_SMOOTHING_EPOCHS}


def he_std(weight: torch.Tensor, negative_slope: float = 1e-2) -> float:
    """Std of nnU-Net's He initialisation (InitWeights_He(1e-2): kaiming_normal_, fan_in, leaky ReLU gain)
    for a conv weight (out, in, *kernel)."""
    fan_in = weight[0].numel()
    return math.sqrt(2.0 / (1 + negative_slope ** 2)) / math.sqrt(fan_in)


def weight_scale_ratios(module: nn.Module) -> dict[str, float]:
    """Std of every conv weight in ``module`` divided by its He-init std (1 at init; growth shows > 1)."""
    return {name: m.weight.detach().float().std().item() / he_std(m.weight)
            for name, m in module.named_modules() if isinstance(m, nn.modules.conv._ConvNd)}


@torch.no_grad()
def channel_redundancy(features: torch.Tensor) -> float:
    """Mean absolute Pearson correlation between the channels of a feature map (N, C, *spatial), over every
    sample and position: about 0.1 for nnU-Net's He init on hippocampus (8 channels), 1 when every channel
    carries the same signal. A short pretraining raised it to 0.6-0.7 in the first stage
    (docs/methods/readouts.md). nan with fewer than 2 channels."""
    channels = features.shape[1]
    if channels < 2:
        return float("nan")
    x = features.detach().float().transpose(0, 1).reshape(channels, -1)
    x = x - x.mean(dim=1, keepdim=True)
    norms = x.norm(dim=1, keepdim=True)
    x = x / norms.clamp_min(1e-12)
    correlation = (x @ x.T).abs()
    constant = (norms.squeeze(1) == 0)  # a constant channel correlates with nothing
    correlation[constant] = 0.0
    correlation[:, constant] = 0.0
    return ((correlation.sum() - correlation.diagonal().sum()) / (channels * (channels - 1))).item()


@torch.no_grad()
def stage_redundancy(encoder: nn.Module, images: torch.Tensor) -> list[float]:
    """``channel_redundancy`` of every stage output of an nnU-Net encoder (it returns the skips) on ``images``."""
    was_training = encoder.training
    encoder.eval()  # InstanceNorm has no running statistics: eval only stops dropout
    try:
        skips = encoder(images)
    finally:
        encoder.train(was_training)
    return [channel_redundancy(skip) for skip in skips]


@torch.no_grad()
def top1_positive_retrieval(features: torch.Tensor, positive_mask: torch.Tensor) -> float:
    """Fraction of rows whose most cosine-similar other row is one of their positives (N, N mask); ties
    resolve to the first index. Chance: ``retrieval_chance`` (the fraction of positive pairs)."""
    z = F.normalize(features.detach().float(), dim=1)
    similarity = (z @ z.T).fill_diagonal_(float("-inf"))
    nearest = similarity.argmax(dim=1)
    return positive_mask.to(z.device)[torch.arange(len(z), device=z.device), nearest].float().mean().item()


def retrieval_chance(positive_mask: torch.Tensor) -> float:
    """Expected top-1 retrieval of a random neighbour: the fraction of positives among the other rows."""
    n = positive_mask.shape[0]
    off_diagonal = positive_mask.bool() & ~torch.eye(n, dtype=torch.bool, device=positive_mask.device)
    return off_diagonal.sum().item() / (n * (n - 1))
