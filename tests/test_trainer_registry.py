"""Trainer names parsed from the registry's tables: every length, recipe and pinned method."""
import pickle

import pytest

from nnunet_ssl.integration.trainers import registry
from nnunet_ssl.integration.trainers.finetune import SSLInitTrainer, SSLInitTrainer_lowEncoderLR, SSLScratchTrainer
from nnunet_ssl.integration.trainers.lengths import LENGTHS
from nnunet_ssl.integration.trainers.sized import nnUNetStockTrainer


def test_method_names_match_the_method_registry():
    from nnunet_ssl.methods import list_methods
    assert sorted(registry.PRETRAINING_METHODS) == list_methods()


def test_recipe_names_are_single_tokens():  # parse_name splits on "_"
    assert all("_" not in recipe for recipes in registry.RECIPES.values() for recipe in recipes)


@pytest.mark.parametrize("name, parsed", [
    ("SSLInitTrainer", ("SSLInitTrainer", None, "default", "")),
    ("SSLInitTrainer_cpu2000it", ("SSLInitTrainer", None, "default", "cpu2000it")),
    ("SSLInitTrainer_pcl_lowEncoderLR_cpu500it", ("SSLInitTrainer", "pcl", "lowEncoderLR", "cpu500it")),
    ("SSLInitTrainer_mlsscl_longshort_decoderFirst", ("SSLInitTrainer", "mlsscl_longshort", "decoderFirst", "")),
    ("SSLScratchTrainer_rerun_cpu4000it", ("SSLScratchTrainer", None, "rerun", "cpu4000it")),
    ("nnUNetTrainer_cpu1000it", ("nnUNetTrainer", None, "default", "cpu1000it")),
    ("nnUNetTrainer", None),  # nnU-Net's own
    ("nnUNetTrainer_500epochs", None),  # nnU-Net's own variant
    ("SSLScratchTrainer_pcl", None),  # scratch pins no method
    ("SSLInitTrainer_unknownmethod_cpu500it", None),
    ("SSLInitTrainer_cpu3it", None),
    ("SSLUniMatchTrainer_fixMatch_cpu4000it", ("SSLUniMatchTrainer", None, "fixMatch", "cpu4000it")),
    ("SSLInitUniMatchTrainer_pcl_fixMatch_tiny", ("SSLInitUniMatchTrainer", "pcl", "fixMatch", "tiny")),
    ("SSLInitBCPTrainer_mae_lowEncoderLR_cpu2000it", ("SSLInitBCPTrainer", "mae", "lowEncoderLR", "cpu2000it")),
    ("SSLBCPTrainer_cpu8000it", ("SSLBCPTrainer", None, "default", "cpu8000it")),
    ("SSLMeanTeacherTrainer_weight10_shortRampup_strongView_cpu4000it",
     ("SSLMeanTeacherTrainer", None, "weight10_shortRampup_strongView", "cpu4000it")),
    ("SSLInitMeanTeacherTrainer_pcl_lowEncoderLR_weight1", ("SSLInitMeanTeacherTrainer", "pcl", "lowEncoderLR_weight1", "")),
    ("SSLMeanTeacherTrainer_strongView_weight10", None),  # stacked recipes only in the table's order
    ("SSLMeanTeacherTrainer_weight1_weight1", None),
    ("SSLInitTrainer_pcl_lowEncoderLR_decoderFirst", None),  # only attribute-only recipes stack
    ("SSLInitMeanTeacherTrainer_pcl_weight1_lowEncoderLR", None),
    ("SSLBCPTrainer_pcl", None),  # scratch pins no method
    ("SSLUniMatchTrainer_weight1", None),  # a mean-teacher recipe
])
def test_parse_name(name, parsed):
    assert registry.parse_name(name) == parsed
    if parsed:
        assert registry.compose_name(*parsed) == name


def test_classes_carry_length_method_and_recipe():
    cls = registry.trainer_class("SSLInitTrainer_pcl_lowEncoderLR_cpu2000it")
    assert issubclass(cls, SSLInitTrainer_lowEncoderLR) and cls.PRETRAINING_METHOD == "pcl"
    assert (cls.NUM_EPOCHS, cls.ITERATIONS_PER_EPOCH, cls.WARMUP_EPOCHS, cls.TEST_TIME_MIRRORING) == (80, 25, 4, False)
    assert cls.ENCODER_LR_SCALE == 0.1
    assert registry.trainer_class("SSLInitTrainer_pcl_lowEncoderLR_cpu2000it") is cls  # cached: one class per name
    assert registry.trainer_class("SSLInitTrainer") is SSLInitTrainer
    assert registry.trainer_class("SSLScratchTrainer_cpu500it").__mro__[1] is SSLScratchTrainer
    assert pickle.loads(pickle.dumps(cls)) is cls
    stock = registry.trainer_class("nnUNetTrainer_cpu4000it")
    assert issubclass(stock, nnUNetStockTrainer) and stock.NUM_EPOCHS * stock.ITERATIONS_PER_EPOCH == 4000


def test_stacked_and_semi_supervised_classes():
    from nnunet_ssl.integration.trainers.bcp import BCPMixin
    from nnunet_ssl.integration.trainers.mean_teacher import SSLInitMeanTeacherTrainer_lowEncoderLR
    from nnunet_ssl.integration.trainers.unimatch import UniMatchMixin
    cls = registry.trainer_class("SSLInitMeanTeacherTrainer_pcl_lowEncoderLR_weight10_strongView_cpu4000it")
    assert issubclass(cls, SSLInitMeanTeacherTrainer_lowEncoderLR) and cls.PRETRAINING_METHOD == "pcl"
    assert (cls.CONSISTENCY_MAX_WEIGHT, cls.STUDENT_STRONG_VIEW, cls.ENCODER_LR_SCALE) == (10.0, True, 0.1)
    assert cls.CONSISTENCY_RAMPUP_FRACTION == 1.0 and cls.NUM_EPOCHS * cls.ITERATIONS_PER_EPOCH == 4000
    assert pickle.loads(pickle.dumps(cls)) is cls
    assert registry.trainer_class("SSLMeanTeacherTrainer_shortRampup").CONSISTENCY_RAMPUP_FRACTION == 0.25
    fixmatch = registry.trainer_class("SSLInitUniMatchTrainer_mae_fixMatch_cpu2000it")
    assert issubclass(fixmatch, UniMatchMixin) and fixmatch.PRETRAINING_METHOD == "mae"
    assert (fixmatch.STRONG_VIEWS, fixmatch.STRONG_VIEW_WEIGHT, fixmatch.FEATURE_PERTURBATION_WEIGHT) == (1, 1.0, 0.0)
    unimatch = registry.trainer_class("SSLUniMatchTrainer_tiny")
    assert (unimatch.STRONG_VIEWS, unimatch.CONFIDENCE_THRESHOLD, unimatch.FEATURE_DROPOUT) == (2, 0.95, 0.5)
    assert issubclass(registry.trainer_class("SSLInitBCPTrainer_pcl_cpu500it"), BCPMixin)


def test_benchmark_arms_of_the_semi_supervised_trainers():
    from nnunet_ssl.benchmark.run import plan_cells
    rows = [{"labeled": 5, "base_fold": 0, "fold": 6}]
    cells = plan_cells(["scratch", "pcl"], rows, "cpu4000it", ("uniMatch", "fixMatch", "bcp"))
    assert [(c.arm, c.trainer) for c in cells] == [
        ("scratch", "SSLScratchTrainer_cpu4000it"), ("scratch+uniMatch", "SSLUniMatchTrainer_cpu4000it"),
        ("scratch+fixMatch", "SSLUniMatchTrainer_fixMatch_cpu4000it"), ("scratch+bcp", "SSLBCPTrainer_cpu4000it"),
        ("pcl+uniMatch", "SSLInitUniMatchTrainer_pcl_cpu4000it"),
        ("pcl+fixMatch", "SSLInitUniMatchTrainer_pcl_fixMatch_cpu4000it"), ("pcl+bcp", "SSLInitBCPTrainer_pcl_cpu4000it")]
    assert [c.trainer for c in plan_cells(["scratch+bcp"], rows, "tiny")] == ["SSLBCPTrainer_tiny"]


def test_existing_lengths_keep_their_values():  # earlier benchmark results stay reproducible
    assert {k: (v.epochs, v.iterations_per_epoch, v.val_iterations_per_epoch, v.warmup_epochs, v.test_time_mirroring)
            for k, v in LENGTHS.items() if k in ("cpu500it", "cpuDemo", "cpu2000it", "cpu1200it", "tiny")} == {
        "cpu500it": (20, 25, 1, 1, False), "cpuDemo": (40, 25, 1, 2, False), "cpu2000it": (80, 25, 1, 4, False),
        "cpu1200it": (48, 25, 2, 2, True), "tiny": (2, 2, 1, 1, False)}


def test_every_listed_name_resolves_and_none_is_duplicated():
    names = registry.trainer_names()
    assert len(names) == len(set(names)) > 100
    assert all(registry.trainer_class(n).__name__ == n for n in names)


def test_shim_answers_nnunet_lookup_without_importing_methods(tmp_path):
    """A fresh interpreter resolves names through the shim's __getattr__ and never imports a method."""
    import subprocess
    import sys
    code = ("import sys, nnunet_ssl.integration.ext_trainers.nnunet_ssl_trainers as shim;"
            "c = shim.SSLInitTrainer_pcl_cpu500it; assert c.PRETRAINING_METHOD == 'pcl';"
            "assert not hasattr(shim, 'nnUNetTrainer_DA5');"
            "print(sorted(m for m in sys.modules if m.startswith('nnunet_ssl.methods')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_cpu_lengths_redraw_progress_with_each_checkpoint_and_at_the_end():
    from nnunet_ssl.integration.trainers.sized import plots_at
    assert [e for e in range(25) if plots_at(e, 25, 10)] == [9, 19, 24]
    assert registry.trainer_class("SSLScratchTrainer_cpu4000it").PLOT_EVERY == 10
    assert registry.trainer_class("SSLScratchTrainer_tiny").PLOT_EVERY is None  # every epoch, as nnU-Net
