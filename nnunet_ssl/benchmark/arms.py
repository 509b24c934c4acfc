"""The benchmark's arms: the reference arms, the --finetune choices that change the base trainer, and
arm names (``method+recipe``). Read by the matrix runner (run.py), the report and the studies."""

SCRATCH = "scratch"  # the matched control: SSLScratchTrainer, the schedule every pretrained arm uses
SCRATCH_RERUN = "scratch_rerun"  # the same again in its own folder: the run-to-run noise floor
STOCK = "nnunet"  # nnU-Net's own nnUNetTrainer at the same length: is the matched schedule handicapped?
REFERENCE_ARMS = {SCRATCH: ("SSLScratchTrainer", "default"), SCRATCH_RERUN: ("SSLScratchTrainer", "rerun"),
                  STOCK: ("nnUNetTrainer", "default")}
# --finetune choices that change the base trainer rather than the recipe: (scratch base, pretrained base, the
# bases' recipe). Unlike a recipe they apply to the scratch arm too (arm "scratch+meanTeacher"), so each has
# its own control. A mean-teacher variant chosen on unreported folds becomes one more line here, e.g.
# "meanTeacherWeight10": ("SSLMeanTeacherTrainer", "SSLInitMeanTeacherTrainer", "weight10").
BASE_FINETUNES = {"meanTeacher": ("SSLMeanTeacherTrainer", "SSLInitMeanTeacherTrainer", "default"),
                  "uniMatch": ("SSLUniMatchTrainer", "SSLInitUniMatchTrainer", "default"),
                  "fixMatch": ("SSLUniMatchTrainer", "SSLInitUniMatchTrainer", "fixMatch"),
                  # the same after a supervised warm start over the first quarter (unimatch.WarmStart)
                  "uniMatchWarmStart": ("SSLUniMatchTrainer", "SSLInitUniMatchTrainer", "warmStart"),
                  "fixMatchWarmStart": ("SSLUniMatchTrainer", "SSLInitUniMatchTrainer", "fixMatch_warmStart"),
                  "bcp": ("SSLBCPTrainer", "SSLInitBCPTrainer", "default")}


def split_arm(arm: str) -> tuple[str, str | None]:
    """``mae+fullNetwork`` -> ("mae", "fullNetwork"): an arm pinned to one recipe; ``pcl`` -> ("pcl", None)."""
    method, _, recipe = arm.partition("+")
    return method, recipe or None
