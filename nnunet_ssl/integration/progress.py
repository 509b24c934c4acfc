"""Per-epoch log of pretraining metrics: a JSON history, a text log and progress.png."""
import os
from datetime import datetime

import matplotlib

from nnunet_ssl.atomic_io import atomic_save_json

matplotlib.use("agg")
import matplotlib.pyplot as plt  # noqa: E402


class ProgressLog:
    def __init__(self, folder: str, history: list[dict] | None = None, enabled: bool = True):
        self.folder = folder
        self.enabled = enabled  # only the main process writes under torchrun
        self.history = history or []
        self.log_file = os.path.join(folder, "training_log.txt")

    def print(self, message: str) -> None:
        if not self.enabled:
            return
        line = f"{datetime.now():%Y-%m-%d %H:%M:%S}: {message}"
        print(line, flush=True)
        with open(self.log_file, "a") as f:
            f.write(line + "\n")

    def add_epoch(self, metrics: dict) -> None:
        self.history.append(metrics)
        if not self.enabled:
            return
        shown = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in metrics.items())
        self.print(shown)
        atomic_save_json(self.history, os.path.join(self.folder, "progress.json"), indent=1)
        self.plot()

    def plot(self) -> None:
        epochs = [m["epoch"] for m in self.history]
        keys = [k for k in self.history[0] if k not in ("epoch", "lr", "seconds", "samples_per_s")]
        fig, axes = plt.subplots(len(keys) + 1, 1, figsize=(8, 2.6 * (len(keys) + 1)), sharex=True)
        for ax, key in zip(axes, keys + ["lr"]):
            ax.plot(epochs, [m[key] for m in self.history], marker=".")
            ax.set_ylabel(key)
            ax.grid(alpha=0.3)
        axes[-1].set_xlabel("epoch")
        fig.suptitle(os.path.basename(self.folder))
        fig.tight_layout()
        fig.savefig(os.path.join(self.folder, "progress.png"), dpi=90)
        plt.close(fig)


def middle_slices(volume, count: int = 3) -> list:
    """``count`` slices of a (Z, Y, X) array along axis 0 at the quarter points (1/4, 1/2, 3/4 for 3)."""
    depth = volume.shape[0]
    return [volume[min(depth - 1, depth * (i + 1) // (count + 1))] for i in range(count)]


def save_preview(panels: dict, path: str, title: str, samples: int = 2, slices: int = 3) -> None:
    """A grid of middle slices: one row per (sample, slice), one column per panel ({title: (B, C, Z, Y, X)}),
    channel 0, every column on the first panel's grey scale so that intensities compare."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    arrays = {name: tensor.detach().float().cpu().numpy()[:, 0] for name, tensor in panels.items()}
    reference = next(iter(arrays.values()))
    low, high = float(reference.min()), float(reference.max())
    rows = [(b, s) for b in range(min(samples, len(reference))) for s in range(slices)]
    fig, axes = plt.subplots(len(rows), len(arrays), figsize=(2.4 * len(arrays), 2.4 * len(rows)), squeeze=False)
    for column, (name, array) in enumerate(arrays.items()):
        for row, (b, s) in enumerate(rows):
            ax = axes[row][column]
            ax.imshow(middle_slices(array[b], slices)[s], cmap="gray", vmin=low, vmax=high)
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(name, fontsize=9)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
