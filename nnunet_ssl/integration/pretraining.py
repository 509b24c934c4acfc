"""One pretraining, as a library call: ``pretrain(PretrainSpec(...))`` (nnUNetv2_ssl_pretrain parses its
arguments into the spec and calls it).

``PretrainSpec.check()`` validates everything that needs no data (the method, the recipe and its method,
the method's options and the schedule, the device, the unlabeled folders) before anything is read or
written; ``pretrain`` runs it first, then what needs the dataset (its plans, the patch against the
network, the unlabeled images), and only then writes.
"""
import contextlib
import os
from dataclasses import dataclass, field

from nnunet_ssl.errors import SSLUserError


@dataclass(frozen=True)
class PretrainSpec:
    """Every option of one pretraining (the command's options, by the same names)."""
    dataset: str  # id or name
    configuration: str = "3d_fullres"
    plans: str = "nnUNetPlans"
    method: str = "pcl"
    device: str = "cuda"
    resume: bool = False  # --c
    recipe: str | None = None  # a name from pretraining/recipes or a JSON file
    method_options: dict = field(default_factory=dict)  # --set KEY=VALUE, over the recipe's method_config
    schedule_options: dict = field(default_factory=dict)  # --epochs, --lr, ..., over the recipe's schedule
    # raw images named like nnU-Net's, preprocessed with the same plans and pretrained on with the labeled cases;
    # the checkpoint's case_ids lists them as unlabeled__<folder name>__<case>
    unlabeled_folders: tuple[str, ...] = ()
    include_images_ts: bool = False  # also the dataset's imagesTs
    allow_missing_cases: bool = False  # pretrain on the complete preprocessed cases when some lack theirs

    def check(self):
        """Everything that needs no data, in the order a user fixes it; returns the checked settings
        (``PretrainSchedule``, the method's config): the method's schedule defaults, then the recipe,
        then the options. Raises SSLUserError; reads only the recipe file and writes nothing."""
        from nnunet_ssl.integration.device import check_device
        from nnunet_ssl.integration.pretrainer import PretrainSchedule
        from nnunet_ssl.integration.unlabeled import check_unlabeled_folder
        from nnunet_ssl.methods import get_method, require_methods
        from nnunet_ssl.methods.recipes import load_recipe

        require_methods([self.method])
        recipe = load_recipe(self.recipe) if self.recipe else {}
        if recipe.get("method", self.method) != self.method:
            raise SSLUserError(f"recipe {self.recipe!r} is for method {recipe['method']!r}, not {self.method!r}.",
                               f"pass -m {recipe['method']}")
        method_class = get_method(self.method)
        # both validate themselves when built (names, types, declared limits, rules between options)
        schedule = PretrainSchedule.from_dict({**method_class.schedule_defaults, **recipe.get("schedule", {}),
                                               **self.schedule_options})
        config = method_class.config_class.from_dict({**recipe.get("method_config", {}), **self.method_options})
        check_device(self.device)
        for folder in self.unlabeled_folders:
            check_unlabeled_folder(folder)
        return schedule, config


def pretrain(spec: PretrainSpec) -> str:
    """Pretrain and return the path of checkpoint_final.pth. All errors a user can fix are SSLUserError, and
    each comes before the first write. Preprocessed cases missing against the dataset are refused unless
    ``spec.allow_missing_cases``."""
    from nnunet_ssl.atomic_io import remove_leftover_temp_files
    from nnunet_ssl.blocks.distributed import rank
    from nnunet_ssl.integration import locations
    from nnunet_ssl.integration.checkpoint import finished_checkpoint
    from nnunet_ssl.integration.dataset import open_preprocessed, resolve_dataset_name, with_unlabeled
    from nnunet_ssl.integration.device import select_device
    from nnunet_ssl.integration.folder_lock import FolderLock
    from nnunet_ssl.integration.pretrainer import Pretrainer, check_patch_request, continuation_conflict

    schedule, config = spec.check()
    method_values = config.to_dict()
    torch_device = select_device(spec.device)
    name = resolve_dataset_name(spec.dataset)
    folder = locations.pretraining_folder(name, spec.method, spec.plans, spec.configuration)
    # one writer per folder; only the main process writes under torchrun
    with FolderLock(folder, "nnUNetv2_ssl_pretrain") if rank() == 0 else contextlib.nullcontext():
        removed = remove_leftover_temp_files(folder) if rank() == 0 else []
        if removed:
            print(f"removed {len(removed)} temporary file(s) an interrupted write left in {folder}: {removed}")
        # checked before opening the data, so a refused run does not preprocess unlabeled cases first
        final = os.path.join(folder, locations.FINAL)
        finished = finished_checkpoint(final, folder, spec.resume) if os.path.isfile(final) else None
        if finished is not None and not spec.resume:
            raise SSLUserError(f"a finished pretraining already exists: {final}. Nothing was overwritten.",
                               "use it (nnUNetv2_train ... -tr SSLInitTrainer), or move that folder away to "
                               "pretrain again")
        if finished is None and os.path.isfile(os.path.join(folder, locations.LATEST)) and not spec.resume:
            raise SSLUserError(f"an unfinished pretraining exists in {folder}.",
                               "add --c to continue it, or move that folder away to start over")
        data = open_preprocessed(name, spec.configuration, spec.plans, allow_missing_cases=spec.allow_missing_cases,
                                 allow_missing_option=True)  # the labeled cases: nothing written yet
        unlabeled = list(spec.unlabeled_folders)
        if finished is not None:
            # --c with other settings is refused as for an unfinished run: "already finished" would claim them
            asked = with_unlabeled(data, unlabeled, spec.include_images_ts, preprocess=False)
            conflict = continuation_conflict(finished.to_dict(), {"method": method_values,
                                                                  "schedule": schedule.to_dict()},
                                             asked.case_ids, folder, parts=("method", "schedule"))
            if conflict is not None:
                raise conflict
            print(f"already finished: {final}")
            return final
        check_patch_request(data, schedule.patch_size)  # what the plans alone refuse: before unlabeled cases are made
        data = with_unlabeled(data, unlabeled, spec.include_images_ts)
        trainer = Pretrainer(data, spec.method, method_values, schedule, torch_device, folder)
        if spec.resume:
            trainer.resume()
        return trainer.run()
