"""Unlabeled images for pretraining, preprocessed with the dataset's own plans into a plugin-owned folder.

Sources are folders of raw images named like nnU-Net's raw images (``CASE_0000<file_ending>``, one
file per channel, the file ending from dataset.json): any ``--unlabeled DIR`` and, on request, the
dataset's own ``$nnUNet_raw/DatasetXXX/imagesTs``.

Layout (never inside nnU-Net's ``<data_identifier>`` folders: ``infer_dataset_class`` rejects a
folder with extra file kinds, and nnU-Net's trainer would pick the cases up as training cases)::

    $nnUNet_preprocessed/DatasetXXX/nnunet_ssl_unlabeled/<data_identifier>/
        unlabeled__<source>__<case>.b2nd       the image, exactly as DefaultPreprocessor makes it
        unlabeled__<source>__<case>_seg.b2nd   no labels: the nonzero mask (0 inside, -1 outside),
                                               what nnU-Net itself makes for a case without seg
        unlabeled__<source>__<case>.pkl        nnU-Net's properties, plus 'nnunet_ssl_source'

so the folder is an ordinary ``nnUNetDatasetBlosc2`` folder and nnU-Net's own class reads it:
``load_case(id)`` returns ``(data, seg, None, properties)`` like a labeled case.

Case ids are ``unlabeled__<source>__<case>``: ``<source>`` is the folder's name (``imagesTs`` for
the dataset's test images), ``<case>`` the raw case name. Two different folders with the same name
are refused (the ids would collide), as is an id equal to a labeled case id.

A case is preprocessed again only when it is missing or stale: 'nnunet_ssl_source' records the
source files (path, size, mtime) and a hash of the plans entries that change preprocessing
(spacing, normalisation, resampling, transpose, intensity statistics, reader), so a re-run with the
same inputs only reads the small .pkl files. Files are written under temporary names and renamed
into place, the .pkl last, so an interrupted run never leaves a case that looks finished. Every case to
preprocess is first read and checked (readable, one volume per file, the dataset's dimensionality, a
size at the plans' spacing within UNLABELED_SIZE_FACTOR times the dataset's largest case), so a bad one
stops the run before anything is written.
"""
import hashlib
import json
import os
import re
from dataclasses import dataclass
from os.path import basename, isdir, isfile, join, realpath

import numpy as np
from batchgenerators.utilities.file_and_folder_operations import load_pickle
from nnunetv2.paths import nnUNet_preprocessed, nnUNet_raw
from nnunetv2.training.dataloading.nnunet_dataset import comp_blosc2_params, nnUNetDatasetBlosc2
from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager, PlansManager
from tqdm import tqdm

from nnunet_ssl.blocks.distributed import rank, world_size
from nnunet_ssl.errors import SSLUserError

PLUGIN_FOLDER = "nnunet_ssl_unlabeled"
ID_PREFIX = "unlabeled__"
SOURCE_KEY = "nnunet_ssl_source"
_CHANNEL = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")


@dataclass
class UnlabeledCases:
    folder: str  # the plugin-owned preprocessed folder
    case_ids: list[str]  # sorted
    sources: dict[str, list[str]]  # case id -> raw image files, one per channel


class CombinedCases:
    """Labeled cases (nnU-Net's dataset class) and unlabeled ones (the plugin folder) behind one
    ``load_case``, which is all the pretraining samplers use."""

    def __init__(self, labeled, unlabeled):
        self.labeled, self.unlabeled = labeled, unlabeled
        self._unlabeled_ids = frozenset(unlabeled.identifiers)
        self.identifiers = list(labeled.identifiers) + list(unlabeled.identifiers)

    def load_case(self, identifier: str):
        return (self.unlabeled if identifier in self._unlabeled_ids else self.labeled).load_case(identifier)

    def __getitem__(self, identifier: str):
        return self.load_case(identifier)

    def __len__(self) -> int:
        return len(self.identifiers)


class WithoutClassLocations:
    """The plugin folder's cases for nnU-Net's ``nnUNetDataLoader``, which reads
    ``properties['class_locations']``: preprocessing without a label writes none. The loader only
    uses it to oversample foreground (or to find annotated voxels with an ignore label), so an
    unlabeled loader without oversampling gets an empty entry."""

    def __init__(self, cases):
        self.cases = cases
        self.identifiers = list(cases.identifiers)

    def load_case(self, identifier: str):
        data, seg, seg_prev, properties = self.cases.load_case(identifier)
        properties.setdefault("class_locations", {})
        return data, seg, seg_prev, properties

    def __getitem__(self, identifier: str):
        return self.load_case(identifier)

    def __len__(self) -> int:
        return len(self.identifiers)


def plugin_folder(dataset_name: str, data_identifier: str) -> str:
    return join(str(nnUNet_preprocessed), dataset_name, PLUGIN_FOLDER, data_identifier)


def images_ts_folder(dataset_name: str) -> str:
    """``$nnUNet_raw/DatasetXXX/imagesTs``, or a clear error when it is not there."""
    if not nnUNet_raw.is_set():
        raise SSLUserError("--imagesTs needs nnUNet_raw, which is not set.",
                           "export nnUNet_raw=... (the folder holding the raw DatasetXXX folders), or drop --imagesTs")
    folder = join(str(nnUNet_raw), dataset_name, "imagesTs")
    if not isdir(folder):
        raise SSLUserError(f"--imagesTs was requested but {folder} does not exist.",
                           "drop --imagesTs, or put the test images there (named like nnU-Net raw images, "
                           "CASE_0000<file ending>)")
    return folder


def check_unlabeled_folder(folder: str) -> None:
    """Refuse an --unlabeled path that is not a folder; reads nothing inside it (a pretraining checks this
    before it opens the dataset)."""
    if not isdir(folder):
        raise SSLUserError(f"unlabeled folder {os.path.abspath(folder)} " +
                           ("is a file, not a folder." if os.path.exists(folder) else "does not exist."),
                           "pass a folder of raw images to --unlabeled")


def find_cases(folder: str, file_ending: str, channel_names: dict) -> dict[str, list[str]]:
    """{raw case name: [one file per channel, in channel order]} for a folder of nnU-Net raw images.

    Every case must have exactly the dataset's channels; other file kinds (not ending in
    ``file_ending``, or hidden) are ignored."""
    folder = os.path.abspath(folder)
    num_channels = len(channel_names)
    naming = f"CASE_0000{file_ending}" + (f" ... CASE_{num_channels - 1:04d}{file_ending}" if num_channels > 1 else "")
    check_unlabeled_folder(folder)
    names = sorted(f for f in os.listdir(folder) if f.endswith(file_ending) and not f.startswith(".")
                   and isfile(join(folder, f)))
    if not names:
        others = sorted(f for f in os.listdir(folder) if not f.startswith("."))[:5]
        raise SSLUserError(f"no images ending in {file_ending!r} (the dataset's file_ending) in {folder}"
                           + (f"; it holds e.g. {others}." if others else "; it is empty."),
                           f"put the images there named like nnU-Net raw images: {naming}, one file per channel")
    cases: dict[str, dict[int, str]] = {}
    for name in names:
        match = _CHANNEL.match(name[:-len(file_ending)])
        if match is None:
            raise SSLUserError(f"{join(folder, name)} is not named like an nnU-Net raw image "
                               f"(CASE_XXXX{file_ending}, XXXX the 4-digit channel index).",
                               f"rename it, e.g. to {name[:-len(file_ending)]}_0000{file_ending}, or move it "
                               f"out of {folder}")
        cases.setdefault(match["case"], {})[int(match["channel"])] = join(folder, name)
    channels_text = f"the dataset has {num_channels} channel{'s' * (num_channels != 1)} {dict(channel_names)}"
    result = {}
    for case, channels in sorted(cases.items()):
        extra = sorted(c for c in channels if c >= num_channels)
        if extra:
            raise SSLUserError(f"{channels[extra[0]]} is an extra channel: {channels_text}, so case {case!r} "
                               f"must be {naming.replace('CASE', case)}.",
                               f"remove that file from {folder}, or use a folder with only the dataset's channels")
        missing = [c for c in range(num_channels) if c not in channels]
        if missing:
            expected = join(folder, f"{case}_{missing[0]:04d}{file_ending}")
            raise SSLUserError(f"{expected} is missing: {channels_text}, and case {case!r} has only "
                               f"{[basename(channels[c]) for c in sorted(channels)]}.",
                               f"add the missing channel, or move case {case!r} out of {folder}")
        result[case] = [channels[c] for c in range(num_channels)]
    return result


def preprocessing_signature(plans_manager: PlansManager, config: ConfigurationManager) -> str:
    """Hash of what changes the preprocessed arrays (not patch size or architecture, so the CPU
    plans variant shares nnU-Net's data, as it does for the labeled cases)."""
    keys = ("data_identifier", "preprocessor_name", "spacing", "normalization_schemes", "use_mask_for_norm",
            "resampling_fn_data", "resampling_fn_data_kwargs", "resampling_fn_seg", "resampling_fn_seg_kwargs")
    plans = plans_manager.plans
    payload = {"configuration": {k: config.configuration.get(k) for k in keys},
               "transpose_forward": plans.get("transpose_forward"),
               "image_reader_writer": plans.get("image_reader_writer"),
               "intensity": plans.get("foreground_intensity_properties_per_channel")}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _source_record(files: list[str], signature: str) -> dict:
    stats = [os.stat(f) for f in files]
    return {"files": [[realpath(f), s.st_size, s.st_mtime_ns] for f, s in zip(files, stats)],
            "signature": signature}


def _up_to_date(folder: str, case_id: str, record: dict) -> bool:
    pkl = join(folder, case_id + ".pkl")
    if not (isfile(pkl) and isfile(join(folder, case_id + ".b2nd")) and isfile(join(folder, case_id + "_seg.b2nd"))):
        return False
    try:
        return load_pickle(pkl).get(SOURCE_KEY) == record
    except Exception:  # a damaged .pkl: make the case again
        return False


def nifti_expected_bytes(header: bytes) -> int | None:
    """Bytes a NIfTI-1 file must hold (voxel offset + voxel data) from its first 348 bytes; None when
    it is no NIfTI-1 header (other formats are left to their reader)."""
    import struct
    if len(header) < 348:
        return None
    for order in "<>":
        if struct.unpack(order + "i", header[:4])[0] == 348:
            dims = struct.unpack(order + "8h", header[40:56])
            bitpix = struct.unpack(order + "h", header[72:74])[0]
            offset = struct.unpack(order + "f", header[108:112])[0]
            if not 1 <= dims[0] <= 7 or bitpix <= 0:
                return None
            return int(offset) + int(np.prod([max(d, 1) for d in dims[1:dims[0] + 1]])) * bitpix // 8
    return None


def truncation_problem(path: str) -> str | None:
    """Why a file is incomplete (a cut-off gzip stream, or less voxel data than its NIfTI header
    promises), or None. Readers fill a cut-off image with zeros without a word."""
    import gzip
    import zlib
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            header = f.read(348)
            size = len(header)
            while chunk := f.read(1 << 20):
                size += len(chunk)
    except EOFError as e:
        return f"the compressed data is cut off ({e})"
    except (gzip.BadGzipFile, zlib.error, OSError):
        return None  # not gzip at all, or damaged inside: the reader's own error names the file
    expected = nifti_expected_bytes(header) if ".nii" in path else None
    if expected is not None and size < expected:
        return f"it holds {size} bytes of a NIfTI image whose header needs {expected}"
    return None


def _read(reader_writer, files: list[str]):
    """Read one case as nnU-Net does; on failure, or a truncated file, or a file with several volumes
    (a 4D image), name the file."""
    for f in files:
        problem = truncation_problem(f)
        if problem:
            raise SSLUserError(f"{f} is truncated: {problem}.", "copy that file again from its source, or remove it")
    data, properties = _read_checked(reader_writer, files)
    if data.shape[0] != len(files):
        culprit = next((f for f in files if reader_writer.read_images([f])[0].shape[0] != 1), files[0])
        raise SSLUserError(f"{culprit} holds several volumes (a 4D image); nnU-Net expects one 3D (or 2D) image per "
                           f"file, one file per channel ({len(files)} here).",
                           "split it into one file per channel (CASE_0000, CASE_0001, ...) if its volumes are the "
                           "dataset's channels, or remove it")
    return data, properties


def _read_checked(reader_writer, files: list[str]):
    try:
        return reader_writer.read_images(files)
    except Exception as error:
        culprit, reason = None, error
        for f in files:
            try:
                reader_writer.read_images([f])
            except Exception as e:
                culprit, reason = f, e
                break
        if culprit is None:  # each file reads alone: the channels do not fit together
            raise SSLUserError(f"the channel files of one case do not fit together ({_reason(error)}): {files}.",
                               "give all channels of a case the same shape, spacing and orientation") from None
        raise SSLUserError(f"cannot read {culprit} with {type(reader_writer).__name__} ({_reason(reason)}).",
                           "replace or remove that file; it must be a readable image in the dataset's "
                           "file format") from None


# [assumption] an unlabeled case may reach at most this many times the voxels of the dataset's largest case
# once resampled to the plans' spacing: beyond it its header's spacing is likely wrong or it shows far more
# than the dataset (issue 37: images at 20 mm on a 1 mm dataset took 9 minutes, 14 GB and a 1.5 GB file)
UNLABELED_SIZE_FACTOR = 8


def resampled_shape(shape: list[int], spacing: list[float], transpose_forward: list[int],
                    target_spacing: list[float]) -> list[int]:
    """The shape nnU-Net's DefaultPreprocessor resamples an image (reader's axis order) to, before its
    crop to the nonzero region (so an upper bound): transposed, then scaled by spacing / target spacing;
    a 2d configuration keeps the first axis' spacing."""
    from nnunetv2.preprocessing.resampling.default_resampling import compute_new_shape
    shape_t, spacing_t = [shape[i] for i in transpose_forward], [spacing[i] for i in transpose_forward]
    target = list(target_spacing)
    if len(target) < len(shape_t):
        target = [spacing_t[0]] + target
    return [int(s) for s in compute_new_shape(shape_t, spacing_t, target)]


def largest_planned_voxels(dataset_name: str, plans_manager: PlansManager, config: ConfigurationManager
                           ) -> tuple[int, list[int]]:
    """Voxels and shape of the dataset's largest case at the configuration's spacing, from nnU-Net's
    fingerprint (shapes after crop and spacings per case); the plans' median shape without one."""
    fingerprint = join(str(nnUNet_preprocessed), dataset_name, "dataset_fingerprint.json")
    shapes = []
    if isfile(fingerprint):
        with open(fingerprint) as f:
            found = json.load(f)
        shapes = [resampled_shape(list(shape), list(spacing), plans_manager.transpose_forward, config.spacing)
                  for shape, spacing in zip(found.get("shapes_after_crop", []), found.get("spacings", []))]
    if not shapes:
        shapes = [[int(round(s)) for s in config.configuration["median_image_size_in_voxels"]]]
    shape = max(shapes, key=lambda s: int(np.prod(s)))
    return int(np.prod(shape)), shape


def oversize_problem(shape: list[int], spacing: list[float], transpose_forward: list[int],
                     target_spacing: list[float], largest: tuple[int, list[int]]) -> str | None:
    """Why an image is too large once resampled to the plans' spacing (UNLABELED_SIZE_FACTOR times the
    voxels of the dataset's largest case, ``largest``), or None."""
    reached = resampled_shape(shape, spacing, transpose_forward, target_spacing)
    voxels = int(np.prod(reached))
    if voxels <= UNLABELED_SIZE_FACTOR * largest[0]:
        return None
    return (f"(shape {shape}, spacing {[round(float(s), 4) for s in spacing]}) would be resampled to {reached} "
            f"voxels ({voxels / 1e6:.1f} M, {voxels * 4 / 2 ** 30:.2f} GiB as float32) at the plans' spacing "
            f"{[round(float(s), 4) for s in target_spacing]}: {voxels / largest[0]:.0f} times the dataset's largest "
            f"case there ({largest[1]}); more than {UNLABELED_SIZE_FACTOR} times is refused")


def _is_2d(spacing) -> bool:
    """nnU-Net's readers give 2D images a first spacing 999 times the largest other one."""
    return max(spacing) > 500 * min(spacing)


def _reason(error: Exception) -> str:
    """The error type and its last non-empty line (SimpleITK puts the source location first)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return type(error).__name__ + (f": {lines[-1][:300]}" if lines else "")


def _preprocess_case(files: list[str], output_folder: str, case_id: str, record: dict,
                     plans_manager: PlansManager, config: ConfigurationManager, dataset_json: dict) -> None:
    """nnU-Net's DefaultPreprocessor.run_case_save with seg_file=None, written atomically."""
    data, properties = _read(plans_manager.image_reader_writer_class(), files)
    preprocessor = config.preprocessor_class(verbose=False)
    data, seg, properties = preprocessor.run_case_npy(data, None, properties, plans_manager, config, dataset_json)
    data = data.astype(np.float32, copy=False)
    seg = seg.astype(np.int16, copy=False)
    properties[SOURCE_KEY] = record
    block_data, chunk_data = comp_blosc2_params(data.shape, tuple(config.patch_size), data.itemsize)
    block_seg, chunk_seg = comp_blosc2_params(seg.shape, tuple(config.patch_size), seg.itemsize)
    tmp = join(output_folder, f".tmp-{os.getpid()}-{case_id}")
    suffixes = (".b2nd", "_seg.b2nd", ".pkl")  # the .pkl last: it marks a finished case
    try:
        nnUNetDatasetBlosc2.save_case(data, seg, properties, tmp, chunks=chunk_data, blocks=block_data,
                                      chunks_seg=chunk_seg, blocks_seg=block_seg)
        if isfile(join(output_folder, case_id + ".pkl")):
            os.remove(join(output_folder, case_id + ".pkl"))
        for suffix in suffixes:
            os.replace(tmp + suffix, join(output_folder, case_id + suffix))
    finally:
        for suffix in suffixes:
            if os.path.exists(tmp + suffix):
                os.remove(tmp + suffix)


def find_unlabeled(dataset_name: str, dataset_json: dict, folders: list[str], labeled_ids: list[str]
                   ) -> tuple[dict[str, list[str]], int]:
    """{case id: its raw files} of the unlabeled ``folders`` and how many distinct folders they are;
    reads names only (a finished pretraining asked to continue compares its cases with these)."""
    file_ending = dataset_json["file_ending"]
    channel_names = dataset_json.get("channel_names", dataset_json.get("modality", {}))
    sources: dict[str, list[str]] = {}
    seen: dict[str, str] = {}  # source name -> folder
    for folder in folders:
        real = realpath(folder)
        name = basename(real)
        if name in seen:
            if seen[name] == real:
                continue  # the same folder twice (e.g. --imagesTs and --unlabeled .../imagesTs)
            raise SSLUserError(f"two unlabeled folders have the same name {name!r} ({seen[name]} and {real}); "
                               f"their case ids ({ID_PREFIX}{name}__<case>) would collide.",
                               "rename one of the folders (or link it under another name)")
        seen[name] = real
        for case, files in find_cases(folder, file_ending, channel_names).items():
            sources[f"{ID_PREFIX}{name}__{case}"] = files
    clashes = sorted(set(sources) & set(labeled_ids))
    if clashes:
        raise SSLUserError(f"unlabeled case id {clashes[0]!r} is also a labeled case id of {dataset_name}.",
                           "rename the unlabeled folder")
    return sources, len(seen)


def prepare_unlabeled(dataset_name: str, plans_manager: PlansManager, config: ConfigurationManager,
                      dataset_json: dict, folders: list[str], labeled_ids: list[str]) -> UnlabeledCases:
    """Find, check and (where needed) preprocess the unlabeled cases of ``folders``."""
    sources, n_folders = find_unlabeled(dataset_name, dataset_json, folders, labeled_ids)
    output_folder = plugin_folder(dataset_name, config.data_identifier)
    signature = preprocessing_signature(plans_manager, config)
    case_ids = sorted(sources)
    records = {c: _source_record(sources[c], signature) for c in case_ids}
    todo = [c for c in case_ids if not _up_to_date(output_folder, c, records[c])]
    main = rank() == 0
    # every case read and sized before the first is written: one that cannot be used stops the run up front
    largest = largest_planned_voxels(dataset_name, plans_manager, config)
    reader = plans_manager.image_reader_writer_class()
    for case_id in tqdm(todo, desc="checking unlabeled cases", disable=not main or not todo):
        data, properties = _read(reader, sources[case_id])
        image_2d = _is_2d(properties["spacing"])
        if image_2d != _is_2d(plans_manager.plans.get("original_median_spacing_after_transp", [1, 1, 1])):
            raise SSLUserError(f"{sources[case_id][0]} is a {'2D' if image_2d else '3D'} image, but "
                               f"{plans_manager.dataset_name}'s images are {'3D' if image_2d else '2D'}.",
                               "use images of the same dimensionality as the dataset's")
        problem = oversize_problem(list(data.shape[1:]), list(properties["spacing"]),
                                   plans_manager.transpose_forward, config.spacing, largest)
        if problem:
            raise SSLUserError(f"{sources[case_id][0]} {problem}; nothing was preprocessed.",
                               f"check its header's spacing, resample or crop it to about the dataset's spacing "
                               f"{list(config.spacing)} and field of view, or move it out of its folder")
    os.makedirs(output_folder, exist_ok=True)
    if todo:
        start = rank() * len(todo) // world_size()  # under torchrun each rank starts on its own share
        for case_id in tqdm(todo[start:] + todo[:start], desc="preprocessing unlabeled cases", disable=not main):
            if not _up_to_date(output_folder, case_id, records[case_id]):  # another rank may have made it
                _preprocess_case(sources[case_id], output_folder, case_id, records[case_id],
                                 plans_manager, config, dataset_json)
    if main:
        print(f"unlabeled: {len(case_ids)} case(s) from {n_folders} folder(s), {len(todo)} preprocessed now, "
              f"in {output_folder}")
    return UnlabeledCases(output_folder, case_ids, sources)
