"""Let stock nnU-Net commands find our trainers through ``nnUNet_extTrainer`` (nnunetv2 >= 2.8.0).

``nnunet_ssl-trainers.pth`` (placed at the site-packages root by a wheel install, or by
``nnUNetv2_ssl_doctor --fix`` for editable installs) runs ``startup()`` at every interpreter
start, before anything imports torch: it appends our shim folder to ``nnUNet_extTrainer`` (keeping
whatever the user set there) and sets OpenMP's passive wait policy unless the user chose one
(device.wait_policy_default). Nothing is written into nnunetv2. Standard library only.
"""
import os
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


def startup(environ=os.environ) -> None:
    """What the start-up hook runs in every interpreter of the environment."""
    from nnunet_ssl.integration.device import wait_policy_default
    register_trainer_folder(environ)
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
