"""Fine-tuning trainers for stock ``nnUNetv2_train -tr NAME`` (found through nnUNet_extTrainer).

Named variants (``SSLInitTrainer_pcl_lowEncoderLR_cpu2000it``) come from registry.py; any of them can
be imported from here by name too.
"""
from nnunet_ssl.integration.trainers.finetune import (MatchedScheduleTrainer, SSLInitTrainer,
                                                     SSLInitTrainer_decoderFirst, SSLInitTrainer_linearWarmup,
                                                     SSLInitTrainer_lowEncoderLR, SSLScratchTrainer,
                                                     SSLScratchTrainer_linearWarmup, SSLScratchTrainer_rerun)
from nnunet_ssl.integration.trainers.registry import __getattr__, trainer_class, trainer_names  # noqa: F401
from nnunet_ssl.integration.trainers.sized import SizedTrainer, nnUNetStockTrainer

__all__ = ["MatchedScheduleTrainer", "SSLInitTrainer", "SSLInitTrainer_decoderFirst", "SSLInitTrainer_linearWarmup",
           "SSLInitTrainer_lowEncoderLR", "SSLScratchTrainer", "SSLScratchTrainer_linearWarmup",
           "SSLScratchTrainer_rerun", "SizedTrainer", "nnUNetStockTrainer", "trainer_class", "trainer_names"]
