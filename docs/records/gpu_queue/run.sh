#!/bin/bash
# usage (repo root on the GPU machine): bash .gpu/run.sh SECONDS CELL...   CELL = TRAINER:FOLD[:DA]
# trains the queued cells at once (one process each) for at most SECONDS, then archives every model folder into
# $OUT: finished folds keep checkpoint_final.pth, unfinished ones checkpoint_latest.pth (continue with --c)
budget=$1; shift
start=$(date +%s)
read dataset configuration < .gpu/target
if [ -z "$SKIP_INSTALL" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu/whl/*.whl || exit 1
  mkdir -p /tmp/site/SimpleITK && echo '"""stub: training does not read or write images"""' > /tmp/site/SimpleITK/__init__.py
fi
export PYTHONPATH=/tmp/site:$PWD nnUNet_raw=/tmp/raw nnUNet_preprocessed=$PWD/.gpu/pre nnUNet_results=/tmp/res \
  nnUNet_compile=f OMP_NUM_THREADS=1 nnUNet_extTrainer=$PWD/nnunet_ssl/integration/ext_trainers PYTHONUNBUFFERED=1
mkdir -p /tmp/raw /tmp/res /tmp/logs
[ -d .gpu/res ] && cp -rn .gpu/res/. /tmp/res/
nvidia-smi -L; nproc; python3 -c "import torch; print(torch.__version__)"
pids=()
for cell in "$@"; do
  IFS=: read tr fold da <<< "$cell"
  folder=/tmp/res/$dataset/${tr}__nnUNetPlans_cpu__$configuration/fold_$fold
  [ -f $folder/checkpoint_final.pth ] && continue
  resume=0; [ -f $folder/checkpoint_latest.pth ] && resume=1
  RESUME=$resume nnUNet_n_proc_DA=${da:-2} python3 .gpu/driver.py $dataset $configuration $fold $tr nnUNetPlans_cpu \
    >> /tmp/logs/${tr}_$fold.txt 2>&1 &
  pids+=($!)
done
while [ $(( $(date +%s) - start )) -lt $budget ]; do
  alive=0; for p in "${pids[@]}"; do kill -0 $p 2>/dev/null && alive=1; done
  [ $alive = 0 ] && break
  sleep 5
done
pkill -f .gpu/driver.py; sleep 3
echo "elapsed $(( $(date +%s) - start )) s"
for f in /tmp/logs/*.txt; do echo "== $f"; grep -E "Epoch [0-9]+$|epoch time|Traceback|Error" $f | tail -3; done
cd /tmp/res && find . -name "checkpoint_best.pth" -delete
for d in */*/; do
  for fold in $d/fold_*; do [ -f $fold/checkpoint_final.pth ] && rm -f $fold/checkpoint_latest.pth; done
  tar czf $OUT/$(basename $d).tgz $d
done
tar czf $OUT/logs.tgz -C /tmp logs
ls -la $OUT
