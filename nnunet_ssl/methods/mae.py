"""MAE-style masked image modeling on the whole planned U-Net, as nnssl's BaseMAETrainer (OpenMind,
Wald et al., ICCV 2025) does it with a dense CNN: mask blocks of the input, fill them with zeros,
restore the image, MSE on the masked voxels only.
"""
from dataclasses import dataclass
from typing import ClassVar

import torch

from nnunet_ssl.blocks.reconstruction import masked_mse
from nnunet_ssl.data.masking import blocky_mask, check_block_size, scaled_block_size
from nnunet_ssl.data.sampler import PatchSampler, random_mirror
from nnunet_ssl.errors import SSLUserError
from nnunet_ssl.methods.base import DataGeometry, Range
from nnunet_ssl.methods.reconstruction import ReconstructionConfig, ReconstructionMethod


@dataclass(frozen=True)
class MAEConfig(ReconstructionConfig):
    mask_ratio: float = 0.75  # fraction of blocks masked per sample [code: nnssl BaseMAETrainer mask_percentage]
    # voxels per axis; None: the same fraction of the patch as nnssl's 16 of 160 voxels, rounded to a divisor
    # of the patch (data/masking.py: scaled_block_size; 32x48x32 -> 4x4x4) [assumption]
    block_size: tuple | None = None
    mirror: bool = True  # mirror each axis with p = 0.5 [code: nnssl MAE MirrorTransform]; no rotation/scaling

    OWNER: ClassVar[str] = "mae"
    LIMITS: ClassVar[dict] = {"mask_ratio": Range(0, 1, low_open=True, high_open=True,
                                                  why="some blocks masked, some kept"),
                              "block_size": Range(1)}

    def check(self) -> None:  # whether block_size divides the patch: in MAE, where the patch is known
        if self.block_size is not None and (len(self.block_size) != 3 or not all(
                isinstance(b, int) and not isinstance(b, bool) for b in self.block_size)):
            self.refuse("block_size", f"needs three whole numbers of voxels, one per axis of the 3D patch, got "
                        f"{list(self.block_size)}", "e.g. --set block_size=[4,4,4], or leave it unset for the "
                        "automatic size")


class MAE(ReconstructionMethod):
    """Masked voxels become 0 [code: nnssl ``masked_data = data * mask``]. nnU-Net z-scores intensities,
    so 0 is the mean intensity of the normalisation region: zero-fill and mean-fill are the same here,
    and a learned fill value would need a mask token, which a dense CNN has no place for (SparK)."""
    name = "mae"
    config_class = MAEConfig

    def __init__(self, network, bottleneck_channels: int, config: MAEConfig, geometry: DataGeometry):
        super().__init__(network, bottleneck_channels, config, geometry)
        self.block_size = list(config.block_size) if config.block_size is not None else \
            scaled_block_size(self.patch_size)
        try:  # needs the patch, known with the data
            check_block_size(self.patch_size, self.block_size)
        except ValueError:
            raise SSLUserError(f"mae block_size {self.block_size} does not divide the patch {self.patch_size}.",
                               f"pass divisors of {self.patch_size}, e.g. --set block_size=[4,4,4], or leave it "
                               "unset") from None

    def derived_values(self) -> dict:
        grid = [p // b for p, b in zip(self.patch_size, self.block_size)]
        return {**super().derived_values(), "block_size": self.block_size, "mask_grid": grid,
                "masked_blocks": int(self.config.mask_ratio * grid[0] * grid[1] * grid[2])}

    def make_sampler(self, cases, case_ids: list[str], batch_size: int) -> PatchSampler:
        return PatchSampler(cases, case_ids, batch_size, self.patch_size,
                            augment=random_mirror if self.config.mirror else None)

    def mask_for(self, images: torch.Tensor) -> torch.Tensor:
        return blocky_mask(images.shape[0], self.patch_size, self.block_size, self.config.mask_ratio,
                           device=images.device)

    def training_step(self, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        images = batch["image"]
        mask = self.mask_for(images)
        reconstruction = self.reconstruct(images * mask)
        loss = masked_mse(reconstruction, images, mask)
        with torch.no_grad():  # what predicting 0 (the mean intensity) everywhere would score
            zero = masked_mse(torch.zeros_like(images), images, mask)
        return loss, {"loss": loss.item(), "loss_predict_zero": zero.item(),
                      "masked_fraction": 1.0 - mask.mean().item()}

    def preview(self, batch: dict) -> dict[str, torch.Tensor]:
        images = batch["image"]
        mask = self.mask_for(images)
        masked = images * mask
        return {"input": images, "masked input": masked, "reconstruction": self.reconstruct(masked)}
