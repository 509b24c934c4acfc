#!/bin/bash
# Prepares .gpu/ (ignored by git) for docs/records/gpu_cells_2026-12-04/run.sh: the packages the
# GPU machine's image lacks, as wheels (SimpleITK is replaced by an empty stub there: 50 MB would not
# fit the 64 MiB a call may carry, and training reads no image files), the driver, and the
# preprocessed cases the cells train on (their 5 labeled cases plus 4 validation cases each for
# nnU-Net's per-epoch pseudo-Dice). Run in the repository root with nnUNet_preprocessed set.
set -e
mkdir -p .gpu/whl
grep -qx "/.gpu/" .git/info/exclude 2>/dev/null || echo "/.gpu/" >> .git/info/exclude
cp docs/records/gpu_cells_2026-12-04/run.sh .gpu/run.sh
cp docs/records/gpu_cells_2026-12-04/driver.py .gpu/driver.py
platforms="--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64"
for p in nnunetv2==2.8.1 blosc2==4.15.0 ndindex==1.10.1 connected-components-3d==4.1.1 nibabel==5.4.2; do
  pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp $platforms -d .gpu/whl $p
done
for p in acvl_utils==0.2.6 batchgenerators==0.25.5 batchgeneratorsv2==0.3.6 dynamic_network_architectures==0.4.4; do
  pip wheel --no-deps -w .gpu/whl $p  # source-only on the index; pure Python
done
python3 - "$@" <<'PY'
import glob, json, os, shutil, sys
folds = [int(f) for f in sys.argv[1:]] or [6, 9, 12]
src = os.path.join(os.environ["nnUNet_preprocessed"], "Dataset501_Hippocampus")
dst = ".gpu/pre/Dataset501_Hippocampus"
os.makedirs(f"{dst}/nnUNetPlans_3d_fullres", exist_ok=True)
for name in ("dataset.json", "nnUNetPlans_cpu.json", "nnUNetPlans.json", "splits_final.json", "dataset_fingerprint.json"):
    shutil.copy(os.path.join(src, name), dst)
splits = json.load(open(os.path.join(src, "splits_final.json")))
cases = {c for f in folds for c in splits[f]["train"] + sorted(splits[f]["val"])[:4]}
for case in cases:
    for path in glob.glob(os.path.join(src, "nnUNetPlans_3d_fullres", case + "*")):
        shutil.copy(path, f"{dst}/nnUNetPlans_3d_fullres/")
print(f"{len(cases)} cases for folds {folds}")
# finished pretrainings for SSLInitTrainer_<method> cells: checkpoint_final.pth and its .json only
results = os.path.join(os.environ["nnUNet_results"], "Dataset501_Hippocampus")
for folder in sorted(glob.glob(os.path.join(results, "SSLPretrain_*"))):
    target = os.path.join(".gpu/res/Dataset501_Hippocampus", os.path.basename(folder))
    os.makedirs(target, exist_ok=True)
    for name in ("checkpoint_final.pth", "checkpoint_final.json"):
        if os.path.isfile(os.path.join(folder, name)):
            shutil.copy(os.path.join(folder, name), target)
    print("pretraining", os.path.basename(folder))
PY
du -sh .gpu
