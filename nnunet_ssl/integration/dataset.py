"""Open an nnU-Net dataset's plans and preprocessed data for pretraining, with clear errors."""
import os
from dataclasses import dataclass, field, replace
from os.path import isdir, isfile, join

from batchgenerators.utilities.file_and_folder_operations import load_json
from nnunetv2.paths import nnUNet_preprocessed
from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class
from nnunetv2.utilities.dataset_name_id_conversion import convert_dataset_name_to_id, maybe_convert_to_dataset_name
from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager, PlansManager

from nnunet_ssl.errors import SSLUserError


@dataclass
class PreprocessedDataset:
    dataset_name: str
    plans_manager: PlansManager
    configuration_name: str
    configuration: ConfigurationManager
    dataset_json: dict
    data_folder: str
    case_ids: list[str]  # the labeled cases, then the unlabeled ones (ids starting with "unlabeled__")
    num_input_channels: int
    unlabeled_folder: str | None = None  # plugin-owned folder of preprocessed unlabeled cases
    unlabeled_case_ids: list[str] = field(default_factory=list)

    @property
    def labeled_case_ids(self) -> list[str]:
        unlabeled = set(self.unlabeled_case_ids)
        return [c for c in self.case_ids if c not in unlabeled]

    def open_cases(self):
        """nnU-Net's own dataset class for this folder (blosc2 or numpy); with unlabeled cases, an
        object whose ``load_case`` dispatches to it or to the unlabeled folder."""
        labeled = infer_dataset_class(self.data_folder)(self.data_folder, self.labeled_case_ids)
        if not self.unlabeled_case_ids:
            return labeled
        from nnunetv2.training.dataloading.nnunet_dataset import nnUNetDatasetBlosc2

        from nnunet_ssl.integration.unlabeled import CombinedCases
        return CombinedCases(labeled, nnUNetDatasetBlosc2(self.unlabeled_folder, list(self.unlabeled_case_ids)))


def resolve_dataset_name(dataset: str | int) -> str:
    if not nnUNet_preprocessed.is_set():
        raise SSLUserError("nnUNet_preprocessed is not set.",
                           "export nnUNet_raw=... nnUNet_preprocessed=... nnUNet_results=... "
                           "(see nnU-Net's documentation/setting_up_paths.md), or run nnUNetv2_ssl_doctor")
    try:
        return maybe_convert_to_dataset_name(dataset)
    except (RuntimeError, ValueError) as e:
        raise SSLUserError(f"dataset {dataset!r} was not found: {str(e).splitlines()[0]}",
                           "check the id with `ls $nnUNet_raw $nnUNet_preprocessed`, or create the dataset "
                           "in nnUNet_raw (DatasetXXX_Name) first") from None


def dataset_id_of(dataset_name: str) -> int:
    """501 for "Dataset501_Hippocampus" (nnU-Net's own conversion)."""
    return int(convert_dataset_name_to_id(dataset_name))


def _load_plans(path: str) -> dict | None:
    """The plans in ``path``, or None when it is no nnU-Net plans file (e.g. splits or fold tables,
    which live in the same folder)."""
    try:
        plans = load_json(path)
    except (OSError, ValueError):
        return None
    if not isinstance(plans, dict) or not isinstance(plans.get("configurations"), dict) or "plans_name" not in plans:
        return None
    return plans


# the files of one preprocessed case, per nnU-Net dataset class (nnunetv2 2.8: blosc2, or numpy .npz)
CASE_FILES = {"nnUNetDatasetBlosc2": (".b2nd", "_seg.b2nd", ".pkl"), "nnUNetDatasetNumpy": (".npz", ".pkl")}
ALLOW_MISSING_OPTION = "--allow-missing-cases"


def incomplete_cases(files: list[str], expected_cases: list[str], suffixes: tuple[str, ...]) -> list[str]:
    """Cases (expected ones, and any with some file in ``files``) that lack one of the ``suffixes``:
    nnU-Net's dataset classes list a case by its image file alone and would silently skip the others."""
    present = set(files)
    seen = {f[:-len(s)] for f in files for s in suffixes if f.endswith(s) and not
            (s == ".b2nd" and f.endswith("_seg.b2nd"))}
    return sorted(c for c in set(expected_cases) | seen if any(c + s not in present for s in suffixes))


def open_preprocessed(dataset: str | int, configuration: str, plans_identifier: str,
                      unlabeled_folders: list[str] = (), include_images_ts: bool = False,
                      allow_missing_cases: bool = False, allow_missing_option: bool = False) -> PreprocessedDataset:
    """The dataset's plans and preprocessed cases. ``unlabeled_folders`` (raw images named like
    nnU-Net's) and, with ``include_images_ts``, ``$nnUNet_raw/DatasetXXX/imagesTs`` are added as
    unlabeled cases, preprocessed with the same plans (see integration.unlabeled).

    Cases of the dataset (gt_segmentations) without all their preprocessed files are refused, unless
    ``allow_missing_cases`` (then left out with a warning); ``allow_missing_option``: the command has
    that option, so the refusal names it."""
    name = resolve_dataset_name(dataset)
    dataset_id = dataset_id_of(name)
    folder = join(str(nnUNet_preprocessed), name)
    plans_file = join(folder, plans_identifier + ".json")
    preprocess_cmd = f"nnUNetv2_plan_and_preprocess -d {int(dataset_id)} -c {configuration}"
    plans = _load_plans(plans_file) if isfile(plans_file) else None
    if plans is None:
        available = sorted(f[:-5] for f in os.listdir(folder) if f.endswith(".json")
                           and _load_plans(join(folder, f)) is not None) if isdir(folder) else []
        what = "is not a plans file" if isfile(plans_file) else "was not found"
        raise SSLUserError(f"no plans {plans_identifier!r} for {name} ({plans_file} {what}; "
                           f"available: {available or 'none'}).",
                           preprocess_cmd if plans_identifier == "nnUNetPlans" or not available
                           else f"pass -p with one of {available}, or run nnUNetv2_ssl_plan_cpu -d {int(dataset_id)}")
    plans_manager = PlansManager(plans)
    if configuration not in plans_manager.available_configurations:
        raise SSLUserError(f"configuration {configuration!r} is not in {plans_identifier} "
                           f"(available: {plans_manager.available_configurations}).",
                           f"pass -c with one of {plans_manager.available_configurations}")
    config = plans_manager.get_configuration(configuration)
    data_folder = join(folder, config.data_identifier)
    if not isdir(data_folder) or not any(f.endswith(".pkl") for f in os.listdir(data_folder)):
        raise SSLUserError(f"{name} is not preprocessed for {configuration} (no data in {data_folder}).",
                           f"nnUNetv2_preprocess -d {dataset_id} -c {configuration} -plans_name {plans_identifier}")
    dataset_json = load_json(join(folder, "dataset.json"))
    dataset_class = infer_dataset_class(data_folder)
    case_ids = sorted(dataset_class.get_identifiers(data_folder))
    expected = sorted(f[:-len(dataset_json["file_ending"])] for f in os.listdir(join(folder, "gt_segmentations"))
                      if f.endswith(dataset_json["file_ending"])) if isdir(join(folder, "gt_segmentations")) else []
    incomplete = incomplete_cases(os.listdir(data_folder), expected, CASE_FILES.get(dataset_class.__name__, ()))
    if incomplete:
        complete = sorted(set(case_ids) - set(incomplete))
        problem = (f"{len(incomplete)} of {name}'s {len(set(expected) | set(case_ids))} cases have no complete "
                   f"preprocessed data in {data_folder} (e.g. {incomplete[:5]}; nnU-Net's gt_segmentations lists "
                   "every training case); preprocessing was interrupted or files were deleted.")
        if not allow_missing_cases:
            raise SSLUserError(problem, f"preprocess again: nnUNetv2_preprocess -d {dataset_id} -c {configuration} "
                               f"-plans_name {plans_identifier}" + (f", or pass {ALLOW_MISSING_OPTION} to use only "
                               f"the {len(complete)} complete ones" if allow_missing_option else ""))
        print(f"WARNING: {problem} {ALLOW_MISSING_OPTION}: using the {len(complete)} complete ones.")
        case_ids = complete
    data = PreprocessedDataset(
        dataset_name=name, plans_manager=plans_manager, configuration_name=configuration, configuration=config,
        dataset_json=dataset_json, data_folder=data_folder, case_ids=case_ids,
        num_input_channels=determine_num_input_channels(plans_manager, config, dataset_json))
    return with_unlabeled(data, unlabeled_folders, include_images_ts)


def with_unlabeled(data: PreprocessedDataset, unlabeled_folders: list[str] = (), include_images_ts: bool = False,
                   preprocess: bool = True) -> PreprocessedDataset:
    """``data`` (labeled cases only) with the unlabeled cases of ``unlabeled_folders`` and, with
    ``include_images_ts``, the dataset's imagesTs added; ``preprocess=False`` only finds their ids."""
    folders = list(unlabeled_folders or ())
    if not (include_images_ts or folders):
        return data
    from nnunet_ssl.integration.unlabeled import find_unlabeled, images_ts_folder, plugin_folder, prepare_unlabeled
    name, config = data.dataset_name, data.configuration
    if include_images_ts:
        folders.insert(0, images_ts_folder(name))
    if preprocess:
        unlabeled = prepare_unlabeled(name, data.plans_manager, config, data.dataset_json, folders, data.case_ids)
        folder, ids = unlabeled.folder, list(unlabeled.case_ids)
    else:
        folder = plugin_folder(name, config.data_identifier)
        ids = sorted(find_unlabeled(name, data.dataset_json, folders, data.case_ids)[0])
    return replace(data, unlabeled_folder=folder, unlabeled_case_ids=ids, case_ids=list(data.case_ids) + ids)
