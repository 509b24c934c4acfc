"""nnUNetv2_ssl_doctor: check that discovery, paths and data are in order; print (or apply) fixes."""
import argparse
import os
import subprocess
import sys
from importlib.metadata import version

from nnunet_ssl.integration import discovery

FIND_TRAINER = ("from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name as f;"
                "print(f('SSLInitTrainer').__module__)")


def trainer_found_in_new_process() -> tuple[bool, str]:
    """Ask a fresh interpreter, as nnUNetv2_train would start, to resolve -tr SSLInitTrainer."""
    result = subprocess.run([sys.executable, "-c", FIND_TRAINER], capture_output=True, text=True, timeout=300)
    lines = (result.stdout + result.stderr).strip().splitlines()
    return result.returncode == 0 and "nnunet_ssl" in result.stdout, (lines[-1] if lines else "")


def doctor(dataset: str | None = None, fix: bool = False) -> bool:
    ok = True

    def report(good: bool, what: str, remedy: str = "") -> None:
        nonlocal ok
        ok &= good
        print(f"[{'ok' if good else 'FAIL'}] {what}" + (f"\n       fix: {remedy}" if not good and remedy else ""))

    nnunet_version = version("nnunetv2")
    major_minor = tuple(int(x) for x in nnunet_version.split(".")[:2])
    report(major_minor >= (2, 8), f"nnunetv2 {nnunet_version} (>= 2.8 has the nnUNet_extTrainer lookup)",
           "pip install 'nnunetv2>=2.8.1'")
    for var in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        value = os.environ.get(var)
        report(bool(value) and os.path.isdir(value), f"{var}={value}",
               f"export {var}=/path/to/{var} (and mkdir -p it)")

    hook = discovery.startup_hook_path()
    found, detail = trainer_found_in_new_process()
    if (not found or discovery.hook_outdated()) and fix:
        print(f"writing start-up hook {discovery.install_startup_hook()}")
        found, detail = trainer_found_in_new_process()
    report(found, f"nnUNetv2_train/-predict find -tr SSLInitTrainer ({detail or 'no output'})",
           f"nnUNetv2_ssl_doctor --fix   (writes {hook}; needed once after `pip install -e`), or "
           f"export {discovery.ENV}={discovery.TRAINER_FOLDER}")
    report(not discovery.hook_outdated(), f"start-up hook {hook} is this version's (it also sets OpenMP's passive "
                                          f"wait policy where our code runs)", "nnUNetv2_ssl_doctor --fix")

    if dataset is not None:
        from nnunet_ssl.errors import SSLUserError
        from nnunet_ssl.integration.dataset import resolve_dataset_name
        from nnunet_ssl.integration.locations import PREFIX
        try:
            name = resolve_dataset_name(dataset)
            report(True, f"dataset {dataset} -> {name}")
            folder = os.path.join(os.environ["nnUNet_preprocessed"], name)
            plans = sorted(f[:-5] for f in os.listdir(folder) if f.endswith(".json") and "Plans" in f) \
                if os.path.isdir(folder) else []
            report(bool(plans), f"plans in {folder}: {plans}", f"nnUNetv2_plan_and_preprocess -d {dataset}")
            results = os.path.join(os.environ.get("nnUNet_results", ""), name)
            pretrained = sorted(d for d in os.listdir(results) if d.startswith(PREFIX)) \
                if os.path.isdir(results) else []
            print(f"[info] pretrainings: {pretrained or 'none yet (nnUNetv2_ssl_pretrain -d ' + str(dataset) + ')'}")
        except SSLUserError as e:
            report(False, e.problem, e.fix or "")
    print("all good" if ok else "some checks failed (see fixes above)")
    return ok


def doctor_entry() -> None:
    parser = argparse.ArgumentParser(prog="nnUNetv2_ssl_doctor", description=__doc__)
    parser.add_argument("-d", dest="dataset", help="also check this dataset's data and pretrainings")
    parser.add_argument("--fix", action="store_true", help="install the start-up hook if trainers are not found")
    args = parser.parse_args()
    sys.exit(0 if doctor(args.dataset, args.fix) else 1)
