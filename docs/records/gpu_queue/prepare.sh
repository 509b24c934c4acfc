#!/bin/bash
# Prepares .gpu/ (ignored by git) for a lent GPU: the packages the GPU machine's image lacks, as wheels (SimpleITK
# replaced there by an empty stub: training reads no image files), the driver, and the preprocessed cases the queued
# cells train on (their labeled cases plus 4 validation cases each, for nnU-Net's per-epoch pseudo-Dice; the final
# validation runs back here with nnUNetv2_train --val). Run in the repository root with nnUNet_preprocessed and
# nnUNet_results set.
# usage: bash prepare.sh DATASET_NAME CONFIGURATION FOLD...     e.g. Dataset027_ACDC 2d 12 16 20
set -e
dataset=$1 configuration=$2; shift 2
here=$(dirname "$0")
mkdir -p .gpu/whl
grep -qx "/.gpu/" .git/info/exclude 2>/dev/null || echo "/.gpu/" >> .git/info/exclude
cp "$here/run.sh" .gpu/run.sh
cp "$here/driver.py" .gpu/driver.py
echo "$dataset $configuration" > .gpu/target
platforms="--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64"
for p in nnunetv2==2.8.1 blosc2==4.15.0 ndindex==1.10.1 connected-components-3d==4.1.1 nibabel==5.4.2; do
  ls .gpu/whl | grep -qi "^${p%%==*}" || pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp $platforms -d .gpu/whl $p
done
for p in acvl_utils==0.2.6 batchgenerators==0.25.5 batchgeneratorsv2==0.3.6 dynamic_network_architectures==0.4.4; do
  ls .gpu/whl | grep -qi "^${p%%==*}" || pip wheel -q --no-deps -w .gpu/whl $p  # source-only; pure Python
done
python3 - "$dataset" "$configuration" "$@" <<'PY'
import glob, json, os, shutil, sys
dataset, configuration, folds = sys.argv[1], sys.argv[2], [int(f) for f in sys.argv[3:]]
src = os.path.join(os.environ["nnUNet_preprocessed"], dataset)
plans = json.load(open(os.path.join(src, "nnUNetPlans.json")))
data = plans["configurations"][configuration]["data_identifier"]
dst = os.path.join(".gpu/pre", dataset)
os.makedirs(os.path.join(dst, data), exist_ok=True)
for name in os.listdir(src):
    if name.endswith(".json"):
        shutil.copy(os.path.join(src, name), dst)
splits = json.load(open(os.path.join(src, "splits_final.json")))
cases = {c for f in folds for c in splits[f]["train"] + sorted(splits[f]["val"])[:4]}
for case in sorted(cases):
    for path in glob.glob(os.path.join(src, data, case + ".*")) + glob.glob(os.path.join(src, data, case + "_seg.*")):
        shutil.copy(path, os.path.join(dst, data))
print(f"{len(cases)} cases of {dataset} / {configuration} for folds {folds}")
results = os.path.join(os.environ["nnUNet_results"], dataset)  # finished pretrainings for SSLInit cells
for folder in sorted(glob.glob(os.path.join(results, "SSLPretrain_*"))):
    target = os.path.join(".gpu/res", dataset, os.path.basename(folder))
    os.makedirs(target, exist_ok=True)
    for name in ("checkpoint_final.pth", "checkpoint_final.json"):
        if os.path.isfile(os.path.join(folder, name)):
            shutil.copy(os.path.join(folder, name), target)
    print("pretraining", os.path.basename(folder))
PY
du -sh .gpu
