#!/bin/bash
# nnUNetv2_ssl_pretrain (PCL) on the real hippocampus CPU plans, 1 epoch x 6 iterations of batch 4:
# before = the code of commit 055a327 (no wait policy set), after = this branch at 299ac1f (sets
# OMP_WAIT_POLICY=PASSIVE); each unpacked with `git archive <commit> nnunet_ssl | tar -x -C /tmp/small_bench/<cond>`
export nnUNet_raw=/work/hippo/raw nnUNet_preprocessed=/work/hippo/pre nnUNet_n_proc_DA=0 nnUNet_compile=false
unset OMP_NUM_THREADS OMP_WAIT_POLICY GOMP_SPINCOUNT
for rep in 1 2; do
  for cond in before after; do
    code=/tmp/small_bench/$cond
    start=$(date +%s.%N); t0=$(date -u +%H:%M:%S); load=$(cut -d' ' -f1 /proc/loadavg)
    out=$(PYTHONPATH=$code nnUNet_results=/tmp/small_results/${cond}_$rep /work/main/.venv/bin/nnUNetv2_ssl_pretrain \
          -d 501 -p nnUNetPlans_cpu -device cpu --epochs 1 --iterations-per-epoch 6 --batch-size 4 2>&1)
    end=$(date +%s.%N)
    policy=$(PYTHONPATH=$code /work/main/.venv/bin/python -c "import nnunet_ssl.cli, os; print(os.environ.get('OMP_WAIT_POLICY', 'unset'))")
    echo "$t0 $cond rep$rep load=$load wall=$(echo "$end - $start" | bc) policy=$policy | $(echo "$out" | grep -o 'epoch 1, loss.*' | tail -1)"
  done
done
echo MEASUREDONE
