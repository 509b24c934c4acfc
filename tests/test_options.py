"""Issue 36: every method option, schedule option and recipe field is validated in one style (declared types
and limits in methods/base.py, rules between options in a config's check()), when the spec is built,
before any data is opened: PretrainSpec.check() refuses without a dataset at all."""
import dataclasses
import typing

import pytest

from nnunet_ssl.errors import SSLUserError
from nnunet_ssl.integration.pretrainer import PretrainSchedule
from nnunet_ssl.integration.pretraining import PretrainSpec
from nnunet_ssl.methods import get_method, list_methods
from nnunet_ssl.methods.base import Hyperparameters, OneOf, Range, limit_problem

NO_DATASET = "Dataset999_NoSuchDataset"  # nothing is looked up: a refusal names the option, not the dataset


def spec(method="pcl", **options) -> PretrainSpec:
    return PretrainSpec(NO_DATASET, method=method, device="cpu", **options)


# (case, spec arguments, texts the problem must contain, text the fix must contain); each check used to run in
# the method's constructor (after the data was opened and unlabeled images preprocessed) or in the training loop
REFUSED_WHEN_BUILT = [
    ("byol momentum order", dict(method="byol", method_options={"base_momentum": 0.999, "final_momentum": 0.99}),
     ["byol option base_momentum/final_momentum", "0.999 > 0.99"], "--set base_momentum=0.996"),
    ("byol momentum above 1", dict(method="byol", method_options={"final_momentum": 1.5}),
     ["byol option final_momentum = 1.5: must be >= 0 and <= 1"], "--set final_momentum=1.0"),
    ("moco temperature 0", dict(method="moco", method_options={"temperature": 0}),
     ["moco option temperature = 0: must be > 0"], "--set temperature=0.2"),
    ("moco momentum 2", dict(method="moco", method_options={"momentum": 2}),
     ["moco option momentum = 2: must be >= 0 and <= 1"], "--set momentum=0.999"),
    ("moco queue 0", dict(method="moco", method_options={"queue_size": 0}),
     ["moco option queue_size = 0: must be >= 1"], "--set queue_size=4096"),
    ("mae mask_ratio 1", dict(method="mae", method_options={"mask_ratio": 1.0}),
     ["mae option mask_ratio = 1.0: must be > 0 and < 1 (some blocks masked, some kept)"], "--set mask_ratio=0.75"),
    ("mae block_size 2 axes", dict(method="mae", method_options={"block_size": [4, 4]}),
     ["mae option block_size: needs three whole numbers"], "--set block_size=[4,4,4]"),
    ("mae grad_clip_norm 0", dict(method="mae", method_options={"grad_clip_norm": 0}),
     ["mae option grad_clip_norm = 0: must be > 0"], "--set grad_clip_norm=12.0"),
    ("models_genesis flip_rate", dict(method="models_genesis", method_options={"flip_rate": 1.5}),
     ["models_genesis option flip_rate = 1.5: must be >= 0 and <= 1 (a probability)"], "--set flip_rate=0.4"),
    ("models_genesis shuffle_blocks 0", dict(method="models_genesis", method_options={"shuffle_blocks": 0}),
     ["models_genesis option shuffle_blocks = 0: must be >= 1"], "leave shuffle_blocks unset"),
    ("models_genesis preview_every 0", dict(method="models_genesis", method_options={"preview_every": 0}),
     ["models_genesis option preview_every = 0: must be >= 1"], "--set preview_every=5"),
    ("mlsscl strides", dict(method="mlsscl", method_options={"short_stride": 2, "long_stride": 2}),
     ["mlsscl option short_stride/long_stride", "δS < δL"], "--set long_stride=2 --set short_stride=1"),
    ("mlsscl weights 0", dict(method="mlsscl", method_options={"alpha": 0, "beta": 0}),
     ["mlsscl option alpha/beta: the loss weights are both 0"], "--set alpha=1"),
    ("mlsscl num_slices 1", dict(method="mlsscl", method_options={"num_slices": 1}),
     ["mlsscl option num_slices = 1: must be >= 2 (a clip needs at least 2 slices)"], "num_slices"),
    ("readout name", dict(method="moco", method_options={"readout": "pre"}),
     ["moco option readout = 'pre': must be one of 'postnorm', 'prenorm', 'multiscale'"], "--set readout=prenorm"),
    ("pcl position axis name", dict(method="pcl", method_options={"position_axis": "XY"}),
     ["position_axis: 'XY' is no anatomical axis", "['AP', 'LR', 'SI']"], "--set position_axis=SI"),
    ("pcl scaling reversed", dict(method="pcl", method_options={"scaling": [1.3, 0.7]}),
     ["pcl/simclr/gcl option scaling: needs [smallest, largest] zoom"], "--set scaling=[0.7,1.3]"),
    ("conv_weight_scale", dict(schedule_options={"conv_weight_scale": "big"}),
     ["schedule option conv_weight_scale = 'big': must be one of 'he', 'free'"], "--conv-weight-scale he"),
    ("epochs 0", dict(schedule_options={"num_epochs": 0}), ["schedule option num_epochs = 0: must be >= 1"],
     "--epochs 100"),
    ("unknown option", dict(method="moco", method_options={"tempreature": 0.2}),
     ["unknown moco option(s) ['tempreature']; allowed: ["], "check the spelling"),
]


@pytest.mark.parametrize("arguments, problem, fix", [c[1:] for c in REFUSED_WHEN_BUILT],
                         ids=[c[0] for c in REFUSED_WHEN_BUILT])
def test_a_bad_option_is_refused_when_the_spec_is_checked(arguments, problem, fix):
    with pytest.raises(SSLUserError) as refused:
        spec(**arguments).check()
    for text in problem:
        assert text in refused.value.problem
    assert fix in refused.value.fix


def test_the_same_options_from_a_recipe_are_refused_by_name(tmp_path):
    recipe = tmp_path / "mine.json"
    recipe.write_text('{"method": "moco", "method_config": {"momentum": -0.5}}')
    with pytest.raises(SSLUserError, match=r"moco option momentum = -0.5: must be >= 0 and <= 1"):
        spec("moco", recipe=str(recipe)).check()
    recipe.write_text('{"schedule": {"conv_weight_scale": "He"}}')
    with pytest.raises(SSLUserError, match="conv_weight_scale = 'He': must be one of 'he', 'free'"):
        spec(recipe=str(recipe)).check()


def test_the_spec_refuses_what_needs_no_data(tmp_path):
    with pytest.raises(SSLUserError, match=r"unknown method\(s\) \['pcll'\]"):
        spec("pcll").check()
    with pytest.raises(SSLUserError, match="recipe 'cpu_demo_mae' is for method 'mae', not 'pcl'") as refused:
        spec("pcl", recipe="cpu_demo_mae").check()
    assert refused.value.fix == "pass -m mae"
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    for folder, problem in ((a_file, "is a file, not a folder"), (tmp_path / "missing", "does not exist")):
        with pytest.raises(SSLUserError, match=problem):
            spec(unlabeled_folders=(str(folder),)).check()


def test_a_good_spec_gives_the_merged_settings(tmp_path):
    """The method's schedule defaults, then the recipe, then the options."""
    recipe = tmp_path / "mine.json"
    recipe.write_text('{"method": "moco", "method_config": {"queue_size": 64, "temperature": 0.3}, '
                      '"schedule": {"num_epochs": 7, "batch_size": 8}}')
    schedule, config = spec("moco", recipe=str(recipe), method_options={"temperature": 0.1},
                            schedule_options={"batch_size": 4}, unlabeled_folders=(str(tmp_path),)).check()
    assert (schedule.initial_lr, schedule.num_epochs, schedule.batch_size) == (0.03, 7, 4)  # MoCo's lr 0.03
    assert (config.queue_size, config.temperature) == (64, 0.1)


def test_every_number_and_text_option_declares_its_limit():
    """One style: a numeric or text option without a declared limit would be checked nowhere (or in a
    constructor, after the data are opened). position_axis (an int or an anatomical name) is PCLConfig.check's."""
    checked_by_rules = {("PCLConfig", "position_axis")}
    configs = {get_method(name).config_class for name in list_methods()} | {PretrainSchedule}
    missing = []
    for config in configs:
        hints = typing.get_type_hints(config)
        for f in dataclasses.fields(config):
            kinds = set(typing.get_args(hints[f.name]) or (hints[f.name],)) - {type(None)}
            if kinds != {bool} and f.name not in config.limits() and (config.__name__, f.name) not in checked_by_rules:
                missing.append(f"{config.__name__}.{f.name}")
    assert missing == []


def test_limits_add_to_the_bases_and_describe_themselves():
    @dataclasses.dataclass(frozen=True)
    class Base(Hyperparameters):
        size: int = 1
        LIMITS: typing.ClassVar[dict] = {"size": Range(1)}

    @dataclasses.dataclass(frozen=True)
    class Child(Base):
        kind: str = "a"
        LIMITS: typing.ClassVar[dict] = {"kind": OneOf(("a", "b"), why="two kinds")}

    assert set(Child.limits()) == {"size", "kind"}
    with pytest.raises(SSLUserError, match=r"Child option size = 0: must be >= 1\."):
        Child(size=0)
    with pytest.raises(SSLUserError, match=r"Child option kind = 'c': must be one of 'a', 'b' \(two kinds\)\."):
        Child(kind="c")
    assert limit_problem((1, 0), Range(1)) == "must be >= 1 for every element"
    assert limit_problem(["a", "b"], OneOf(("a", "b"))) is None
    assert limit_problem(float("nan"), Range()) == "must be finite"


def test_a_method_does_not_check_its_options_again(single_torch_thread):
    """MLSSCL ran its option rules twice (when the config was built and again in the method's constructor):
    now only the config checks them. A config changed after it was built is not checked again."""
    from test_methods_contract import FEATURES, geometry, tiny_encoder

    from nnunet_ssl.methods import MLSSCL, MLSSCLConfig
    config = MLSSCLConfig()
    object.__setattr__(config, "alpha", 0.0)
    object.__setattr__(config, "beta", 0.0)
    MLSSCL(tiny_encoder(), FEATURES[-1], config, geometry())  # the constructor no longer refuses it
    with pytest.raises(SSLUserError, match="alpha/beta"):
        dataclasses.replace(config)  # building it does
