"""Fine-tuning trainers for stock ``nnUNetv2_train -tr NAME`` (found through nnUNet_extTrainer)."""
from nnunet_ssl.integration.trainers import finetune, lengths
from nnunet_ssl.integration.trainers.finetune import WarmupPolyTrainer

# every trainer class, by name: what nnUNet_extTrainer's shim re-exports
TRAINERS = {name: cls for module in (finetune, lengths) for name, cls in vars(module).items()
            if isinstance(cls, type) and issubclass(cls, WarmupPolyTrainer)}
globals().update(TRAINERS)
__all__ = sorted(TRAINERS)
