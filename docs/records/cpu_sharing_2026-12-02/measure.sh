#!/bin/bash
# conditions interleaved, 3 rounds; load average and the other processes recorded before each run
unset OMP_NUM_THREADS OMP_WAIT_POLICY GOMP_SPINCOUNT
STEPS=${STEPS:-8}  # 8 timed steps (after 3 warm-up steps) per run, as measured on 2026-12-02
for rep in 1 2 3; do
  for cond in default passive one_thread; do
    case $cond in
      default) envs="";;
      passive) envs="OMP_WAIT_POLICY=PASSIVE";;
      one_thread) envs="OMP_NUM_THREADS=1";;
    esac
    busy=$(ps -eo pcpu,args --sort=-pcpu | awk '$1>20' | grep -v "step.py\|ps -eo\|awk" | sed 's/ \+/ /g' | cut -c1-90 | tr '\n' ';')
    echo "$(date -u +%H:%M:%S) $cond rep$rep load=$(cut -d' ' -f1 /proc/loadavg) busy=[$busy] $(env $envs /work/main/.venv/bin/python $(dirname "$0")/cpu_sharing_step_2026-12-02.py $STEPS 2>&1 | tail -1)"
  done
done
echo MEASUREDONE
