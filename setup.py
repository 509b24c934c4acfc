"""Build step only: metadata is declared in setup.cfg.

A wheel cannot place a file at the site-packages root through setup.cfg alone, so this copies
``nnunet_ssl-trainers.pth`` there. At interpreter start-up it makes nnU-Net's ``nnUNet_extTrainer``
lookup find our trainers (see nnunet_ssl/integration/discovery.py). Editable installs get no such
file from setuptools; ``nnUNetv2_ssl_doctor --fix`` writes it.
"""
import os
import shutil

from setuptools import setup
from setuptools.command.build_py import build_py

PTH_NAME = "nnunet_ssl-trainers.pth"


class BuildPyWithStartupHook(build_py):
    def run(self):
        super().run()
        source = os.path.join(os.path.dirname(os.path.abspath(__file__)), "nnunet_ssl", "integration", PTH_NAME)
        shutil.copyfile(source, os.path.join(self.build_lib, PTH_NAME))


setup(cmdclass={"build_py": BuildPyWithStartupHook})
