"""Models Genesis (Zhou et al., MICCAI 2019 / MedIA 2021): the whole planned U-Net restores patches
corrupted by a non-linear intensity transform, local pixel shuffling and inner or outer cutout.

The corruptions are the reference's (data/genesis.py, every number traced there); this file holds
their wiring: the rates, the intensity range, the loss.
"""
from dataclasses import dataclass
from typing import ClassVar
from functools import partial

import numpy as np
import torch
import torch.nn.functional as F

from nnunet_ssl.data.genesis import GenesisRates, genesis_corrupt, genesis_flip, shuffle_blocks_for, to_unit_range
from nnunet_ssl.data.sampler import PatchSampler
from nnunet_ssl.errors import SSLUserError
from nnunet_ssl.methods.base import DataGeometry, Range
from nnunet_ssl.methods.reconstruction import ReconstructionConfig, ReconstructionMethod


@dataclass(frozen=True)
class ModelsGenesisConfig(ReconstructionConfig):
    flip_rate: float = 0.4  # [code: config.py flip_rate]
    local_rate: float = 0.5  # local pixel shuffling [code: config.py local_rate]
    nonlinear_rate: float = 0.9  # Bezier intensity transform [code: config.py nonlinear_rate]
    paint_rate: float = 0.9  # in- or outpainting [code: config.py paint_rate]
    inpaint_rate: float = 0.2  # inpainting among the painted, the rest outpainting [code: 1 - outpaint_rate 0.8]
    # windows shuffled per patch; None: the reference's 10000 per 64x64x32 voxels, scaled to the patch [assumption]
    shuffle_blocks: int | None = None

    OWNER: ClassVar[str] = "models_genesis"
    LIMITS: ClassVar[dict] = {**{rate: Range(0, 1, why="a probability") for rate in
                                 ("flip_rate", "local_rate", "nonlinear_rate", "paint_rate", "inpaint_rate")},
                              "shuffle_blocks": Range(1)}


class GenesisCorruption:
    """Per sample: min-max to [0, 1] (Models Genesis' range [code: CT clipped to [-1000, 1000] HU, scaled to
    [0, 1]]; per patch here, since nnU-Net data are z-scored [assumption]), corrupt, map back. A class, so
    that batchgenerators' worker processes can pickle it."""

    def __init__(self, rates: GenesisRates):
        self.rates = rates

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        unit, low, scale = to_unit_range(image)
        return genesis_corrupt(unit, rng, self.rates) * scale + low


class ModelsGenesis(ReconstructionMethod):
    """Loss: MSE over every voxel [code: nn.MSELoss]. The reference ends in a sigmoid for [0, 1] images; the
    output here is linear, as z-scored intensities are unbounded [assumption]."""
    name = "models_genesis"
    config_class = ModelsGenesisConfig

    def __init__(self, network, bottleneck_channels: int, config: ModelsGenesisConfig, geometry: DataGeometry):
        super().__init__(network, bottleneck_channels, config, geometry)
        if min(self.patch_size) < 12:  # the patch is known with the data (the options were checked when built)
            raise SSLUserError(f"the patch {self.patch_size} is too small for Models Genesis' cutouts, which keep "
                               "3 voxels from every border.", "use a --patch-size of at least 12 on every axis")
        self.rates = GenesisRates(config.flip_rate, config.local_rate, config.nonlinear_rate, config.paint_rate,
                                  config.inpaint_rate, config.shuffle_blocks)

    def derived_values(self) -> dict:
        return {**super().derived_values(),
                "shuffle_blocks": self.config.shuffle_blocks or shuffle_blocks_for(self.patch_size)}

    def make_sampler(self, cases, case_ids: list[str], batch_size: int) -> PatchSampler:
        return PatchSampler(cases, case_ids, batch_size, self.patch_size,
                            augment=partial(genesis_flip, probability=self.config.flip_rate),
                            corrupt=GenesisCorruption(self.rates))

    def training_step(self, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        images, corrupted = batch["image"], batch["corrupted"]
        loss = F.mse_loss(self.reconstruct(corrupted).float(), images.float())
        with torch.no_grad():  # what returning the corrupted input unchanged, or predicting 0, would score
            identity = F.mse_loss(corrupted.float(), images.float())
            zero = images.float().pow(2).mean()
        return loss, {"loss": loss.item(), "loss_return_input": identity.item(), "loss_predict_zero": zero.item()}

    def preview(self, batch: dict) -> dict[str, torch.Tensor]:
        return {"original": batch["image"], "corrupted input": batch["corrupted"],
                "restored": self.reconstruct(batch["corrupted"])}
