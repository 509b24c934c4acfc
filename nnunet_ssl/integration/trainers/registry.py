"""Every trainer name this plugin answers to, parsed from three tables instead of made up front.

A name is ``BASE[_METHOD][_RECIPE][_LENGTH]``:
- BASE: ``SSLInitTrainer`` (pretrained encoder), ``SSLScratchTrainer`` (its matched control), the
  same two with semi-supervised training on unlabeled cases (``SSLInitMeanTeacherTrainer`` /
  ``SSLMeanTeacherTrainer``, ``SSLInitUniMatchTrainer`` / ``SSLUniMatchTrainer``, ``SSLInitBCPTrainer`` /
  ``SSLBCPTrainer``) or ``nnUNetTrainer`` (nnU-Net's own trainer, only with a length: the stock arm);
- METHOD (the SSLInit* bases only): the pretraining it loads, from PRETRAINING_METHODS;
- RECIPE: a fine-tuning recipe of that base (``RECIPES``, e.g. ``lowEncoderLR``). Recipes that only set
  class attributes (``STACKABLE``, e.g. the mean teacher's ``weight1`` and ``strongView``) may follow
  one another in the table's order (``SSLMeanTeacherTrainer_weight1_strongView_cpu4000it``), after at
  most one other recipe;
- LENGTH: a named length of lengths.py (``cpu2000it``).

nnU-Net finds a trainer with ``hasattr(module, name)`` on the modules of ``nnUNet_extTrainer``; the
shim module's ``__getattr__`` is ``trainer_class`` below, so a class is made on first request and
cached (the same name always gives the same class; pickle finds it here too). Discovery imports no
pretraining method: the method names are a plain tuple, checked against the method registry by a test.
"""
from functools import cache

from nnunet_ssl.integration.trainers.finetune import (SSLInitTrainer, SSLInitTrainer_decoderFirst,
                                                     SSLInitTrainer_freshFirstStage, SSLInitTrainer_fullNetwork,
                                                     SSLInitTrainer_linearWarmup, SSLInitTrainer_lowEncoderLR,
                                                     SSLScratchTrainer, SSLScratchTrainer_linearWarmup,
                                                     SSLScratchTrainer_rerun)
from nnunet_ssl.integration.trainers.lengths import LENGTHS
from nnunet_ssl.integration.trainers.bcp import (SSLBCPTrainer, SSLInitBCPTrainer, SSLInitBCPTrainer_decoderFirst,
                                                 SSLInitBCPTrainer_lowEncoderLR)
from nnunet_ssl.integration.trainers.mean_teacher import (MEAN_TEACHER_VARIANTS, SSLInitMeanTeacherTrainer,
                                                          SSLInitMeanTeacherTrainer_decoderFirst,
                                                          SSLInitMeanTeacherTrainer_lowEncoderLR, SSLMeanTeacherTrainer)
from nnunet_ssl.integration.trainers.sized import nnUNetStockTrainer
from nnunet_ssl.integration.trainers.unimatch import (SSLInitUniMatchTrainer, SSLInitUniMatchTrainer_decoderFirst,
                                                      SSLInitUniMatchTrainer_fixMatch,
                                                      SSLInitUniMatchTrainer_lowEncoderLR, SSLUniMatchTrainer,
                                                      SSLUniMatchTrainer_fixMatch, WarmStart)

# nnunet_ssl.methods.METHODS by name (tests/test_trainer_registry.py keeps the two equal)
PRETRAINING_METHODS = ("byol", "gcl", "mae", "mlsscl", "mlsscl_longshort", "mlsscl_multiview", "models_genesis", "moco",
                       "pcl", "simclr")

# per base: its recipes by the name the trainer name and the benchmark's --finetune use; "default" is the base
RECIPES: dict[str, dict[str, type]] = {
    "SSLInitTrainer": {"default": SSLInitTrainer, "decoderFirst": SSLInitTrainer_decoderFirst,
                       "lowEncoderLR": SSLInitTrainer_lowEncoderLR, "fullNetwork": SSLInitTrainer_fullNetwork,
                       "linearWarmup": SSLInitTrainer_linearWarmup, "freshFirstStage": SSLInitTrainer_freshFirstStage},
    # a recipe scratch has too changes the schedule: the benchmark trains it as that recipe's control
    "SSLScratchTrainer": {"default": SSLScratchTrainer, "rerun": SSLScratchTrainer_rerun,
                          "linearWarmup": SSLScratchTrainer_linearWarmup},
    "SSLInitMeanTeacherTrainer": {"default": SSLInitMeanTeacherTrainer,
                                  "decoderFirst": SSLInitMeanTeacherTrainer_decoderFirst,
                                  "lowEncoderLR": SSLInitMeanTeacherTrainer_lowEncoderLR, **MEAN_TEACHER_VARIANTS},
    "SSLMeanTeacherTrainer": {"default": SSLMeanTeacherTrainer, **MEAN_TEACHER_VARIANTS},
    "SSLInitUniMatchTrainer": {"default": SSLInitUniMatchTrainer, "fixMatch": SSLInitUniMatchTrainer_fixMatch,
                               "decoderFirst": SSLInitUniMatchTrainer_decoderFirst,
                               "lowEncoderLR": SSLInitUniMatchTrainer_lowEncoderLR, "warmStart": WarmStart},
    "SSLUniMatchTrainer": {"default": SSLUniMatchTrainer, "fixMatch": SSLUniMatchTrainer_fixMatch,
                           "warmStart": WarmStart},
    "SSLInitBCPTrainer": {"default": SSLInitBCPTrainer, "decoderFirst": SSLInitBCPTrainer_decoderFirst,
                          "lowEncoderLR": SSLInitBCPTrainer_lowEncoderLR},
    "SSLBCPTrainer": {"default": SSLBCPTrainer},
    "nnUNetTrainer": {"default": nnUNetStockTrainer},
}
PINS_METHOD = {"SSLInitTrainer", "SSLInitMeanTeacherTrainer", "SSLInitUniMatchTrainer", "SSLInitBCPTrainer"}
# recipes that are attribute-only mixins (not trainer classes): several may follow one another in a name
STACKABLE = {*MEAN_TEACHER_VARIANTS, "warmStart"}


def compose_name(base: str, method: str | None = None, recipe: str = "default", length: str = "") -> str:
    """The trainer name of a (base, method, recipe, length); the inverse of ``parse_name``. Stacked recipes
    are one string joined by "_" (``weight1_strongView``)."""
    parts = [base, method, None if recipe == "default" else recipe, length or None]
    return "_".join(p for p in parts if p)


def parse_name(name: str) -> tuple[str, str | None, str, str] | None:
    """(base, method, recipe, length) of a trainer name, or None when it is not one of ours."""
    for base, recipes in RECIPES.items():
        if name != base and not name.startswith(base + "_"):
            continue
        parts = name[len(base) + 1:].split("_") if name != base else []
        length = parts.pop() if parts and parts[-1] in LENGTHS else ""
        chosen = []  # recipes from the end: stackable ones, then at most one other
        while parts and parts[-1] in recipes and parts[-1] != "default" and (
                not chosen or (parts[-1] not in chosen and chosen[0] in STACKABLE)):
            chosen.insert(0, parts.pop())
            if chosen[0] not in STACKABLE:
                break
        order = list(recipes)
        if [order.index(r) for r in chosen] != sorted(order.index(r) for r in chosen):
            return None  # one name per class: stacked recipes in the table's order
        recipe = "_".join(chosen) or "default"
        method = "_".join(parts) or None
        if method is not None and (base not in PINS_METHOD or method not in PRETRAINING_METHODS):
            return None
        if base == "nnUNetTrainer" and not length:  # plain nnUNetTrainer is nnU-Net's own
            return None
        return base, method, recipe, length
    return None


@cache
def _build(base: str, method: str | None, recipe: str, length: str) -> type:
    chosen = [RECIPES[base][r] for r in recipe.split("_")]
    trainers = [c for c in chosen if not recipe_is_stackable(base, c)]
    cls = trainers[0] if trainers else RECIPES[base]["default"]
    mixins = tuple(c for c in chosen if c is not cls)
    if method is None and not length and not mixins and base != "nnUNetTrainer":
        return cls
    name = compose_name(base, method, recipe, length)
    attributes = {"__module__": __name__, "__qualname__": name,
                  "__doc__": f"{cls.__name__}" + "".join(f" with {m.__name__}" for m in mixins)
                             + (f" loading the {method} pretraining" if method else "")
                             + (f" at length {length} ({LENGTHS[length].iterations} iterations)" if length else "")}
    if base in PINS_METHOD:
        attributes["PRETRAINING_METHOD"] = method
    if length:
        attributes.update(LENGTHS[length].class_attributes())
    return type(name, (*mixins, cls), attributes)


def recipe_is_stackable(base: str, cls: type) -> bool:
    return any(RECIPES[base].get(r) is cls for r in STACKABLE)


def trainer_class(name: str) -> type | None:
    """The trainer class of ``name``, or None when the name is not one of ours."""
    parsed = parse_name(name)
    return _build(*parsed) if parsed else None


def trainer_names() -> list[str]:
    """Every name ``trainer_class`` answers to (for listings and error messages)."""
    names = []
    for base, recipes in RECIPES.items():
        for method in (None, *PRETRAINING_METHODS) if base in PINS_METHOD else (None,):
            for recipe in recipes:
                for length in ("", *LENGTHS):
                    name = compose_name(base, method, recipe, length)
                    if parse_name(name) is not None:
                        names.append(name)
    return names


def __getattr__(name: str) -> type:  # classes made here resolve by module + name (pickle, nnU-Net)
    cls = trainer_class(name) if not name.startswith("__") else None
    if cls is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return cls
