"""One nnU-Net training cell on the GPU machine, without the final validation: that runs afterwards on the CPU
machine with nnUNetv2_train --val on the returned checkpoint_final.pth, over all of the fold's validation cases.
The per-epoch pseudo-Dice (which influences nothing but checkpoint_best) reads 4 validation cases, so only those
travel. usage: driver.py DATASET CONFIGURATION FOLD TRAINER PLANS (RESUME=1 continues checkpoint_latest)."""
import os
import sys

import torch
from nnunetv2.run.run_training import get_trainer_from_args, maybe_load_checkpoint

dataset, config, fold, trainer_name, plans = sys.argv[1:6]
device = torch.device(os.environ.get("DEVICE", "cuda"))
trainer = get_trainer_from_args(dataset, config, int(fold), trainer_name, plans, device=device)
full_split = trainer.do_split
trainer.do_split = lambda: (lambda tr, val: (tr, sorted(val)[:4]))(*full_split())
maybe_load_checkpoint(trainer, os.environ.get("RESUME") == "1", False)
trainer.run_training()
