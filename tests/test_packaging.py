"""The README's commands, CI and setup.cfg stay in step with the code."""
import configparser
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _read(name: str) -> str:
    with open(os.path.join(ROOT, name)) as f:
        return f.read()


def _block(marker: str) -> str:
    blocks = re.findall(rf"<!-- {marker} -->\n```(?:bash)?\n(.*?)\n```\n<!-- /{marker} -->", _read("README.md"), re.S)
    assert len(blocks) == 1, f"README.md must hold exactly one {marker} block"
    return blocks[0]


def test_readme_test_command_creates_a_venv_installs_test_extras_and_runs_pytest():
    command = _block("test-command")
    assert "\n" not in command
    assert "-m venv .venv" in command and '".[test]"' in command and command.endswith(".venv/bin/pytest")


def test_ci_runs_the_readme_test_command_in_a_fresh_venv():
    ci = _read(".ci/run")
    assert "rm -rf .venv" in ci
    assert "<!-- test-command -->" in ci and 'bash -c "set -euo pipefail; $command"' in ci


def test_readme_demo_command_installs_and_runs_the_demo():
    command = _block("demo-command")
    assert "pip install ." in command and command.endswith("nnUNetv2_ssl_demo")


def test_setup_cfg_lists_every_package_and_console_script():
    cfg = configparser.ConfigParser()
    cfg.read(os.path.join(ROOT, "setup.cfg"))
    listed = set(cfg["options"]["packages"].split())
    on_disk = {os.path.relpath(d, ROOT).replace(os.sep, ".") for d, _, files in os.walk(os.path.join(ROOT, "nnunet_ssl"))
               if "__init__.py" in files}
    assert listed == on_disk | {"nnunet_ssl.recipes"}
    scripts = cfg["options.entry_points"]["console_scripts"]
    for name in ("nnUNetv2_ssl_pretrain", "nnUNetv2_ssl_demo", "nnUNetv2_ssl_doctor", "nnUNetv2_ssl_plan_cpu",
                 "nnUNetv2_ssl_splits", "nnUNetv2_ssl_export", "nnUNetv2_ssl_benchmark",
                 "nnUNetv2_ssl_throughput", "nnUNetv2_ssl_health", "nnUNetv2_ssl_render"):
        assert name in scripts


def test_recipes_and_protocols_are_installed_package_data():
    from importlib import resources
    recipes = resources.files("nnunet_ssl.recipes")
    assert (recipes / "recipes" / "pcl_3d.json").is_file()
    assert (recipes / "protocols" / "demo_hippocampus.json").is_file()
    assets = resources.files("nnunet_ssl") / "assets" / "hippocampus"
    assert len([p for p in (assets / "imagesTr").iterdir() if p.name.endswith(".nii.gz")]) == 60
    assert (assets / "ATTRIBUTION.md").is_file()
    # the demo reads the rendered multi-fold evidence at run time, without a checkout's docs/
    assert (resources.files("nnunet_ssl.benchmark") / "evidence.json").is_file()


def test_the_demo_protocol_fine_tunes_the_method_its_recipe_pretrains():
    from nnunet_ssl.benchmark.demo import load_protocol
    from nnunet_ssl.methods.recipes import load_recipe
    from nnunet_ssl.integration.trainers.registry import trainer_class
    protocol = load_protocol()
    method = load_recipe(protocol["pretraining_recipe"])["method"]
    arms = {label: trainer_class(name) for label, name in protocol["trainers"].items()}
    assert None not in arms.values() and arms.pop("scratch").__name__.startswith("SSLScratchTrainer")
    assert [getattr(cls, "PRETRAINING_METHOD", None) in (None, method) for cls in arms.values()] == [True]
