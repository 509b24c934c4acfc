"""Let stock nnU-Net commands find our trainers through ``nnUNet_extTrainer`` (nnunetv2 >= 2.8.0).

``nnunet_ssl-trainers.pth`` (placed at the site-packages root by a wheel install, or by
``nnUNetv2_ssl_doctor --fix`` for editable installs) runs ``startup()`` at every interpreter
start, before anything imports torch: it appends our shim folder to ``nnUNet_extTrainer`` (keeping
whatever the user set there), which is all stock nnU-Net needs to find our trainers. Only in processes that
run our code (``runs_our_code``: our console scripts, nnU-Net's train/predict commands given one of our
trainers) does it also set OpenMP's passive wait policy unless the user chose one
(device.wait_policy_default); every other program in the environment keeps OpenMP's defaults. Nothing is
written into nnunetv2. Standard library only.
"""
import os
import sys
import sysconfig

ENV = "nnUNet_extTrainer"
PTH_NAME = "nnunet_ssl-trainers.pth"
PTH_SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), PTH_NAME)
TRAINER_FOLDER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ext_trainers")


def register_trainer_folder(environ=os.environ) -> str:
    """Append the shim folder to nnUNet_extTrainer (once), keeping the user's entries first."""
    entries = [e for e in environ.get(ENV, "").split(os.pathsep) if e]
    if not any(os.path.abspath(e) == TRAINER_FOLDER for e in entries):
        entries.append(TRAINER_FOLDER)
    environ[ENV] = os.pathsep.join(entries)
    return environ[ENV]


OUR_COMMAND_PREFIX = "nnUNetv2_ssl_"
NNUNET_COMMANDS_TAKING_A_TRAINER = ("nnUNetv2_train", "nnUNetv2_predict", "nnUNetv2_find_best_configuration")


def runs_our_code(argv: list[str]) -> bool:
    """Whether this interpreter runs one of our console scripts, or an nnU-Net command with one of our trainers
    (``-tr SSL...``, or ``-tr nnUNetTrainer_<length>``: our stock arm). Decided from the command line alone: the
    hook runs before any import, when nothing else is known."""
    if not argv:
        return False
    command = os.path.basename(argv[0])
    if command.startswith(OUR_COMMAND_PREFIX):
        return True
    if command not in NNUNET_COMMANDS_TAKING_A_TRAINER or "-tr" not in argv[:-1]:
        return False
    trainer = argv[argv.index("-tr") + 1]
    return trainer.startswith("SSL") or trainer[len("nnUNetTrainer_"):] in _length_names()


def _length_names() -> set[str]:
    """The named lengths (``nnUNetTrainer_<length>`` is our stock arm). lengths.py is standard library only; it is
    loaded by its path because importing the trainers package would import torch before the wait policy is set."""
    import importlib.util
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "trainers", "lengths.py")
    spec = importlib.util.spec_from_file_location("_nnunet_ssl_lengths", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[spec.name]
    return set(module.LENGTHS)


def startup(environ=os.environ, argv: list[str] | None = None) -> None:
    """What the start-up hook runs in every interpreter of the environment."""
    register_trainer_folder(environ)
    if runs_our_code(sys.argv if argv is None else argv):
        from nnunet_ssl.integration.device import wait_policy_default
        wait_policy_default(environ)


def site_packages() -> str:
    return sysconfig.get_paths()["purelib"]


def startup_hook_path(site_dir: str | None = None) -> str:
    return os.path.join(site_dir or site_packages(), PTH_NAME)


def hook_outdated(site_dir: str | None = None) -> bool:
    """A hook file is there but differs from this version's (written by an older doctor --fix)."""
    target = startup_hook_path(site_dir)
    if not os.path.isfile(target):
        return False
    with open(target) as installed, open(PTH_SOURCE) as current:
        return installed.read() != current.read()


def install_startup_hook(site_dir: str | None = None) -> str:
    """Write the .pth hook (what a wheel install ships) into a site directory; return its path."""
    target = startup_hook_path(site_dir)
    with open(PTH_SOURCE) as src:
        text = src.read()
    with open(target, "w") as dst:
        dst.write(text)
    return target
