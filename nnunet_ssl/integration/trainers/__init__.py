"""Fine-tuning trainers for stock ``nnUNetv2_train -tr NAME`` (found through nnUNet_extTrainer)."""
from nnunet_ssl.integration.trainers.finetune import SSLInitTrainer, SSLScratchTrainer, WarmupPolyTrainer
from nnunet_ssl.integration.trainers.lengths import (SSLInitTrainer_cpu1200it, SSLInitTrainer_cpuDemo,
                                                     SSLInitTrainer_tiny, SSLScratchTrainer_cpu1200it,
                                                     SSLScratchTrainer_cpuDemo, SSLScratchTrainer_tiny)

__all__ = ["WarmupPolyTrainer", "SSLInitTrainer", "SSLScratchTrainer",
           "SSLInitTrainer_cpu1200it", "SSLScratchTrainer_cpu1200it", "SSLInitTrainer_cpuDemo",
           "SSLScratchTrainer_cpuDemo", "SSLInitTrainer_tiny", "SSLScratchTrainer_tiny"]
