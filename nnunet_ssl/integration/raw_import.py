"""Turn two folders of paired volumes (``images/X.nii.gz`` and ``labels/X.nii.gz``) into an nnU-Net raw dataset.

nnU-Net converts the Medical Segmentation Decathlon (``nnUNetv2_convert_MSD_dataset``) but has no command for the
plainest layout there is, the one ``shared/datasets/acdc_train70`` uses. This writes
``$nnUNet_raw/DatasetXXX_Name/{imagesTr/X_0000.nii.gz, labelsTr/X.nii.gz, dataset.json}`` with nnU-Net's own
``generate_dataset_json``. Everything is checked before anything is written (names pair up, one file type, header
geometry of image and label agrees, label values are the declared ones), the dataset is built in a temporary folder
beside its target and renamed into place, and an existing dataset with that id is never touched.
"""
import os
import shutil
import tempfile
from dataclasses import dataclass
from os.path import isdir, join

import numpy as np
import SimpleITK as sitk
from nnunetv2.dataset_conversion.generate_dataset_json import generate_dataset_json
from nnunetv2.paths import nnUNet_raw
from tqdm import tqdm

from nnunet_ssl.errors import SSLUserError

FILE_ENDINGS = (".nii.gz", ".nii", ".mha", ".nrrd")  # read by nnU-Net's SimpleITKIO


@dataclass(frozen=True)
class ImportSpec:
    images: str
    labels: str
    dataset_id: int
    dataset_name: str  # the part after DatasetXXX_
    channel_name: str  # nnU-Net picks the normalisation from it: "CT" -> CT, anything else -> z-score
    label_names: tuple[str, ...]  # index i is label value i; the first is the background

    @property
    def folder_name(self) -> str:
        return f"Dataset{self.dataset_id:03d}_{self.dataset_name}"

    def check(self) -> None:
        """Everything that needs no file read."""
        if not 1 <= self.dataset_id <= 999:
            raise SSLUserError(f"dataset id {self.dataset_id} is outside nnU-Net's 1-999.", "pass -d 1 ... 999")
        if not self.dataset_name or not all(c.isalnum() or c in "-" for c in self.dataset_name):
            raise SSLUserError(f"dataset name {self.dataset_name!r} is not usable in a folder name "
                               f"(letters, digits and '-' only: nnU-Net splits DatasetXXX_Name at '_').",
                               "pass e.g. -n ACDC")
        if len(self.label_names) < 2 or len(set(self.label_names)) != len(self.label_names):
            raise SSLUserError(f"--labels {' '.join(self.label_names)}: need the background and at least one class, "
                               f"each named once.", "e.g. --labels background RV MYO LV (value i is the i-th name)")
        for option, folder in (("-i", self.images), ("-l", self.labels)):
            if not isdir(folder):
                raise SSLUserError(f"{option} {folder} is not a folder.", f"pass the folder of the {option} volumes")


def _ending(name: str) -> str | None:
    return next((e for e in FILE_ENDINGS if name.endswith(e)), None)


def paired_cases(images: str, labels: str) -> tuple[list[str], str]:
    """Sorted case ids that are in both folders under the same name, and their one file ending."""
    found = {}
    for option, folder in (("-i", images), ("-l", labels)):
        names = sorted(n for n in os.listdir(folder) if not n.startswith("."))
        unreadable = [n for n in names if _ending(n) is None]
        if unreadable:
            raise SSLUserError(f"{option} {folder} holds files nnU-Net cannot read, e.g. {unreadable[:3]}.",
                               f"keep only {', '.join(FILE_ENDINGS)} volumes there")
        if not names:
            raise SSLUserError(f"{option} {folder} holds no volumes.", f"point {option} at the folder of volumes")
        found[option] = names
    endings = {_ending(n) for n in found["-i"] + found["-l"]}
    if len(endings) > 1:
        raise SSLUserError(f"the volumes mix file types {sorted(endings)}; nnU-Net needs one per dataset.",
                           "convert them to one type (e.g. .nii.gz) first")
    only_images = sorted(set(found["-i"]) - set(found["-l"]))
    only_labels = sorted(set(found["-l"]) - set(found["-i"]))
    if only_images or only_labels:
        raise SSLUserError(f"images and labels do not pair up by name: {len(only_images)} image(s) without a label "
                           f"(e.g. {only_images[:3]}), {len(only_labels)} label(s) without an image "
                           f"(e.g. {only_labels[:3]}).", "give each image a label file of the same name")
    ending = endings.pop()
    return [n[: -len(ending)] for n in found["-i"]], ending


def _geometry(image: sitk.Image) -> tuple:
    return image.GetSize(), np.round(image.GetSpacing(), 4).tolist(), np.round(image.GetOrigin(), 3).tolist()


def check_pair(image_path: str, label_path: str, num_labels: int) -> None:
    """Image and label describe the same grid, and the label holds only declared values."""
    try:
        image, label = sitk.ReadImage(image_path), sitk.ReadImage(label_path)
    except RuntimeError as e:
        raise SSLUserError(f"cannot read {image_path} or {label_path}: {str(e).strip().splitlines()[-1]}",
                           "replace the damaged file") from None
    if image.GetNumberOfComponentsPerPixel() != 1 or image.GetDimension() != label.GetDimension():
        raise SSLUserError(f"{image_path} is not a single-channel volume like its label.",
                           "one channel per file (nnU-Net's _0000, _0001, ... convention)")
    if _geometry(image) != _geometry(label):
        raise SSLUserError(f"{image_path} and its label differ in size, spacing or origin: "
                           f"{_geometry(image)} against {_geometry(label)}.", "fix the pair's headers")
    values = np.unique(sitk.GetArrayViewFromImage(label))
    if values.min() < 0 or values.max() >= num_labels or not np.all(values == np.round(values)):
        raise SSLUserError(f"{label_path} holds values {values.tolist()[:10]}; --labels declares 0-{num_labels - 1}.",
                           "name every label value with --labels, in order")


def import_paired_folders(spec: ImportSpec) -> str:
    """Write the nnU-Net raw dataset; returns its folder. Refuses, writing nothing, when the dataset id is taken."""
    spec.check()
    if not nnUNet_raw.is_set():
        raise SSLUserError("nnUNet_raw is not set.", "export nnUNet_raw=/path/to/nnUNet_raw (or nnUNetv2_ssl_doctor)")
    raw = str(nnUNet_raw)
    prefix = f"Dataset{spec.dataset_id:03d}_"
    taken = sorted(n for n in os.listdir(raw) if n.startswith(prefix)) if isdir(raw) else []
    if taken:
        raise SSLUserError(f"dataset id {spec.dataset_id} is taken in {raw}: {taken[0]}; it was not changed.",
                           "pass another -d, or remove that folder yourself if it is an earlier import")
    cases, ending = paired_cases(spec.images, spec.labels)
    for case in tqdm(cases, desc="checking pairs", unit="case"):
        check_pair(join(spec.images, case + ending), join(spec.labels, case + ending), len(spec.label_names))
    os.makedirs(raw, exist_ok=True)
    target = join(raw, spec.folder_name)
    building = tempfile.mkdtemp(prefix=f".{spec.folder_name}.", dir=raw)
    try:
        for sub in ("imagesTr", "labelsTr"):
            os.makedirs(join(building, sub))
        for case in tqdm(cases, desc="copying", unit="case"):
            shutil.copyfile(join(spec.images, case + ending), join(building, "imagesTr", f"{case}_0000{ending}"))
            shutil.copyfile(join(spec.labels, case + ending), join(building, "labelsTr", case + ending))
        generate_dataset_json(building, {0: spec.channel_name}, {n: i for i, n in enumerate(spec.label_names)},
                              len(cases), ending, dataset_name=spec.folder_name,
                              description=f"imported by nnUNetv2_ssl_import from {os.path.abspath(spec.images)} "
                                          f"and {os.path.abspath(spec.labels)}",
                              converted_by="nnUNetv2_ssl_import", license="see the source's own license")
        os.rename(building, target)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
    return target
