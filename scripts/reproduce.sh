#!/usr/bin/env bash
# Every number in README.md comes from one of these commands (run on a 2-core CPU machine, no GPU).
# Usage: scripts/reproduce.sh [data|train|results|bench]   (default: results + bench, using the shipped models)
set -euo pipefail
cd "$(dirname "$0")/.."
FRV=.venv/bin/flow-rag-vla
OUT=${OUT:-docs/results}
mkdir -p "$OUT"
export OMP_NUM_THREADS=1  # batch-1 inference and training are fastest single-threaded on small CPUs

# Since stop 29 the merger splices Push chunks newest-only by default (action_merger.splice_mode_by_task:
# [push:replace]); every run before then spliced all tasks with splice_mode (ensembling unless a run set it), and
# PIN keeps them so. (An empty list cannot be passed as a ROS parameter override, hence the explicit entry.)
PIN=(--set "action_merger.splice_mode_by_task=[push:ensemble]")

# five_sets CHECKPOINT NAME DIR: the five 50-episode task/seed sets the multi-task models are compared on
# (Reach 3000, Push 3000 / 5000, PickAndPlace 3000 / 5000) -> DIR/<task>_seed<seed>_NAME.json
five_sets() {
  for ts in reach:3000 push:3000 push:5000 pick_and_place:3000 pick_and_place:5000; do
    OMP_NUM_THREADS=1 $FRV eval "${PIN[@]}" --in-process --task "${ts%:*}" --episodes 50 --seed "${ts#*:}" --checkpoint "$1" \
        --backend onnxruntime --pipelines flow_only --json "$3/${ts%:*}_seed${ts#*:}_$2.json"
  done
}

# eval_sets CHECKPOINT NAME DIR MERGER_SETTING TASK:SEED:EPISODES...: in-process flow_only runs of each set, with
# `--set action_merger.MERGER_SETTING` unless it is empty -> DIR/<task>_seed<seed>_<episodes>_NAME.json
eval_sets() {
  local ckpt=$1 name=$2 dir=$3 setting=$4 set_args=() task seed n && shift 4
  # runs before stop 29 (PIN_SPLICE=1): Push spliced with the run's splice_mode, like every other task
  [ "${PIN_SPLICE:-1}" = 1 ] && case "$setting" in
    splice_mode=*) set_args=(--set "action_merger.splice_mode_by_task=[push:${setting#splice_mode=}]") ;;
    *) set_args=("${PIN[@]}") ;;
  esac
  [ -n "$setting" ] && set_args+=(--set "action_merger.$setting")
  for tsn in "$@"; do
    IFS=: read -r task seed n <<< "$tsn"
    OMP_NUM_THREADS=1 $FRV eval --in-process --task $task --episodes $n --seed $seed --checkpoint "$ckpt" \
        --backend onnxruntime --pipelines flow_only "${set_args[@]}" --json "$dir/${task}_seed${seed}_${n}_$name.json"
  done
}

case "${1:-all}" in
data)   # scripted-expert demonstrations (experts' own success rates land in meta.json)
  # multi-task (vla_v3, vla_mlp_v2): reach 400, push 600, pick_and_place 800 episodes (the second and third
  # commands re-collect the first 400 of their task with the same seeds), scene + side cameras
  $FRV collect --task all --episodes 400 --seed 1000 --out data/demos_2cam --cameras scene side --workers 2
  $FRV collect --task push --episodes 600 --seed 1000 --out data/demos_2cam --cameras scene side --workers 2
  $FRV collect --task pick_and_place --episodes 800 --seed 1000 --out data/demos_2cam --cameras scene side --workers 2
  # vla_v4: the same with twice the Push episodes (1,200, seeds 1000-2199): a hard-linked copy (files are
  # replaced, never rewritten in place), then Push re-collected into it
  rm -rf data/demos_2cam_push1200 && cp -al data/demos_2cam data/demos_2cam_push1200
  rm -f data/demos_2cam_push1200/features_*.safetensors
  $FRV collect --task push --episodes 1200 --seed 1000 --out data/demos_2cam_push1200 --cameras scene side --workers 2
  # vla_v5: vla_v4's data with 1,500 Reach episodes (seeds 1000-2499), as many as the single-task reach_v2 saw
  rm -rf data/demos_2cam_v5 && cp -al data/demos_2cam_push1200 data/demos_2cam_v5
  rm -f data/demos_2cam_v5/features_*.safetensors
  $FRV collect --task reach --episodes 1500 --seed 1000 --out data/demos_2cam_v5 --cameras scene side --workers 2
  # vla_v6 (DAgger on vla_v5): a subset of vla_v5's demonstrations (the same seeds, so the same episodes) ...
  for tn in push:600 reach:600 pick_and_place:500; do
    $FRV collect --task ${tn%:*} --episodes ${tn#*:} --seed 1000 --out data/demos_2cam_base --cameras scene side --workers 2
  done
  # vla_v7 (stop 23): vla_v6's episodes with Push from the perception-tolerant expert (Reach and PickAndPlace:
  # vla_v6's own files; those experts ignore the Push settings, so collecting them again gives the same episodes)
  $FRV collect --task push --episodes 600 --seed 1000 --out data/demos_push_robust --cameras scene side --workers 2 \
      --expert push_line_tolerance_m=0.04 push_lateral_gain=0.3
  mkdir -p data/demos_2cam_robust
  ln -sfn ../demos_2cam_base/reach data/demos_2cam_robust/reach
  ln -sfn ../demos_2cam_base/pick_and_place data/demos_2cam_robust/pick_and_place
  ln -sfn ../demos_push_robust/push data/demos_2cam_robust/push
  .venv/bin/python - <<'PY'
import json
base, robust = (json.load(open(f'data/{d}/meta.json')) for d in ('demos_2cam_base', 'demos_push_robust'))
base['tasks']['push'] = robust['tasks']['push']
json.dump(base, open('data/demos_2cam_robust/meta.json', 'w'), indent=2, sort_keys=True)
PY
  # ... and vla_v5's own Push / Reach rollouts on new seeds, each state labelled with the expert's simulated next 8 actions
  for tns in push:400:200000 reach:150:210000; do
    IFS=: read -r task n seed <<< "$tns"
    $FRV dagger --checkpoint models/vla_v5 --task "$task" --episodes "$n" --seed "$seed" --out data/dagger_v5 --workers 2
  done
  # vla_v13 (stop 29): 1,200 more Push demonstrations on seeds no other dataset or evaluation set uses (1600-2799)
  $FRV collect --task push --episodes 1200 --seed 1600 --out data/demos_2cam_push_extra --cameras scene side --workers 2
  # single-task Reach: reach_v1 (scene camera), reach_v2 (scene + side)
  $FRV collect --task reach --episodes 400 --seed 1000 --out data/demos --workers 2
  $FRV collect --task reach --episodes 1500 --seed 20000 --out data/reach_2cam --cameras scene side --workers 2 ;;
train)
  export OMP_NUM_THREADS=$(nproc)  # training batches (128) do use both cores: vla_v3 ran 1.5 it/s on one, 2.9 on two
  $FRV train --config config/train_reach.yaml && $FRV export --checkpoint models/reach_v1 --out models/reach_v1
  $FRV train --config config/train_reach_v2.yaml && $FRV export --checkpoint models/reach_v2 --out models/reach_v2
  $FRV train --config config/train_vla_v3.yaml && $FRV export --checkpoint models/vla_v3 --out models/vla_v3 --int8 \
      --dataset data/demos_2cam
  # experiment, not shipped: twice the Push data (docs/results/push_data_scaling)
  mkdir -p "$OUT/push_data_scaling"
  $FRV train --config config/train_vla_v4.yaml && $FRV export --checkpoint models/vla_v4 --out models/vla_v4 --int8 \
      --dataset data/demos_2cam_push1200
  five_sets models/vla_v4 vla_v4 "$OUT/push_data_scaling"
  # the shipped multi-task model: vla_v4's data with 1,500 Reach episodes (docs/results/reach_data_scaling)
  mkdir -p "$OUT/reach_data_scaling"
  $FRV train --config config/train_vla_v5.yaml && $FRV export --checkpoint models/vla_v5 --out models/vla_v5 --int8 \
      --dataset data/demos_2cam_v5
  five_sets models/vla_v5 vla_v5 "$OUT/reach_data_scaling"
  for m in vla_v3 vla_v5; do
    OMP_NUM_THREADS=1 $FRV eval "${PIN[@]}" --in-process --task reach --episodes 100 --seed 5000 --checkpoint models/$m \
        --backend onnxruntime --pipelines flow_only --json "$OUT/reach_data_scaling/reach_seed5000_100_$m.json"
  done
  # stop 23, experiment, not shipped: vla_v6's recipe with Push demonstrations from the perception-tolerant expert
  # (docs/results/robust_push_expert; models/vla_v7* are not in git)
  mkdir -p "$OUT/robust_push_expert"
  $FRV train --config config/train_vla_v7.yaml && $FRV export --checkpoint models/vla_v7 --out models/vla_v7 --int8 \
      --dataset data/demos_2cam_robust
  $FRV export --checkpoint models/vla_v7 --noise-scale 0.25 --out models/vla_v7_ns025 --int8 --dataset data/demos_2cam_robust
  for tsn in push:3000:50 push:5000:50 push:7000:50 push:0:100 pick_and_place:3000:50 pick_and_place:5000:50 \
             pick_and_place:7000:50 reach:3000:50 reach:7000:50 reach:5000:100; do
    IFS=: read -r task seed n <<< "$tsn"
    OMP_NUM_THREADS=1 $FRV eval "${PIN[@]}" --in-process --task $task --episodes $n --seed $seed --checkpoint models/vla_v7_ns025 \
        --backend onnxruntime --pipelines flow_only --json "$OUT/robust_push_expert/${task}_seed${seed}_${n}_vla_v7_ns025.json"
  done
  # stop 25: vla_v6 with its EfficientNet trunk fine-tuned (trains on images: run on a GPU machine; the data moves
  # there packed, `python3 scripts/pack_dataset.py pack data/demos_2cam_base P` here and `unpack P data/demos_2cam_base`
  # there). vla_v8_a: the same with the trunk at 0.3x the expert's rate. docs/results/finetuned_trunk, gpu_h200
  mkdir -p "$OUT/finetuned_trunk" "$OUT/expert_continuation"
  $FRV train --config config/train_vla_v8.yaml --eval-episodes 0 && $FRV export --checkpoint models/vla_v8 --out models/vla_v8
  $FRV train --config config/train_vla_v8.yaml --eval-episodes 0 --out models/vla_v8_a --set train.backbone_lr_scale=0.3 &&
      $FRV export --checkpoint models/vla_v8_a --out models/vla_v8_a
  $FRV train --config config/train_vla_v9.yaml --eval-episodes 0 && $FRV export --checkpoint models/vla_v9 --out models/vla_v9 \
      --int8 --dataset data/demos_2cam_base
  for m in vla_v8 vla_v9; do
    for tsn in push:3000:50 push:5000:50 push:7000:50 push:0:100 pick_and_place:3000:50 pick_and_place:5000:50 \
               pick_and_place:7000:50 reach:3000:50 reach:7000:50 reach:5000:100; do
      IFS=: read -r task seed n <<< "$tsn"
      OMP_NUM_THREADS=1 $FRV eval "${PIN[@]}" --in-process --task $task --episodes $n --seed $seed --checkpoint models/$m \
          --backend onnxruntime --pipelines flow_only --json "$OUT/finetuned_trunk/${task}_seed${seed}_${n}_$m.json"
    done
  done
  for s in 3000 5000 7000; do
    OMP_NUM_THREADS=1 $FRV eval "${PIN[@]}" --in-process --task push --episodes 50 --seed $s --checkpoint models/vla_v8_a \
        --backend onnxruntime --pipelines flow_only --json "$OUT/finetuned_trunk/push_seed${s}_50_vla_v8_a.json"
  done
  # vla_v10 (stop 26, CPU): vla_v9's expert trained 4,000 steps more on vla_v9's fixed trunk (freeze_backbone; 13 min
  # of training, 8 min of token caching on the Intel VM); not shipped. docs/results/expert_continuation
  $FRV train --config config/train_vla_v10.yaml && $FRV export --checkpoint models/vla_v10 --out models/vla_v10
  for s in 9000 3000 5000 7000; do
    OMP_NUM_THREADS=1 $FRV eval "${PIN[@]}" --in-process --task push --episodes 50 --seed $s --checkpoint models/vla_v10 \
        --backend onnxruntime --pipelines flow_only --json "$OUT/expert_continuation/push_seed${s}_50_vla_v10.json"
  done
  # how vla_v9's chunks are executed (stop 26): the merger's splice settings, picked on Push 9000-9099, then the
  # evaluation sets (docs/results/chunk_execution_v9; the defaults' numbers are finetuned_trunk's)
  D="$OUT/chunk_execution_v9" && mkdir -p "$D"
  PUSH="push:0:100 push:3000:50 push:5000:50 push:7000:50" PNP="pick_and_place:3000:50 pick_and_place:5000:50 pick_and_place:7000:50"
  for cs in "default::push:9000:100 push:0:100" "rtc:splice_mode=rtc:push:9000:100" "decay2:ensemble_decay=2.0:push:9000:100 $PUSH" \
            "decay4:ensemble_decay=4.0:push:9000:100 $PUSH $PNP reach:5000:100" \
            "replace:splice_mode=replace:push:9000:100 $PUSH $PNP reach:3000:50 reach:5000:100 reach:7000:50" \
            "motion8:ensemble_decay_per_dim=[8.0,8.0,8.0,0.5]:push:9000:100 $PUSH $PNP"; do
    IFS=: read -r name setting sets <<< "$cs"
    eval_sets models/vla_v9 "$name" "$D" "$setting" $sets
  done
  # vla_v11 (stop 27, CPU): vla_v9 with the trunk's last 6 blocks and the expert trained 2,000 steps more on cached
  # activations of its first 5 (trunk_trainable_blocks; 10 min of caching, 41 min of training on the Intel VM); not
  # shipped. docs/results/partial_trunk
  $FRV train --config config/train_vla_v11.yaml && $FRV export --checkpoint models/vla_v11 --out models/vla_v11
  D="$OUT/partial_trunk" && mkdir -p "$D"
  eval_sets models/vla_v11 vla_v11 "$D" '' push:9000:100 $PUSH $PNP reach:3000:50 reach:5000:100 reach:7000:50
  eval_sets models/vla_v11 vla_v11_replace "$D" splice_mode=replace push:9000:100 $PUSH pick_and_place:3000:50
  # vla_v12 (stop 28, CPU): vla_v9's own recipe (the whole trunk, a new 4-px shift of every view at every step)
  # 1,500 steps more; ~3.9 s per step, 97 min on the Intel VM. docs/results/whole_trunk_cpu
  $FRV train --config config/train_vla_v12.yaml && $FRV export --checkpoint models/vla_v12 --out models/vla_v12
  D="$OUT/whole_trunk_cpu" && mkdir -p "$D"
  eval_sets models/vla_v12 vla_v12 "$D" '' push:9000:100 $PUSH $PNP reach:3000:50 reach:5000:100 reach:7000:50
  eval_sets models/vla_v12 vla_v12_replace "$D" splice_mode=replace push:9000:100 $PUSH
  # vla_v13 (stop 29, CPU; the shipped multi-task model): vla_v10's recipe (the expert alone on vla_v9's fixed trunk)
  # with 1,200 more Push demonstrations (train.extra_data); 17 min of token caching, 14 min of training on the Intel
  # VM. Evaluated with the defaults (Push spliced newest-only: action_merger.splice_mode_by_task) and with Push
  # ensembled like the other tasks; a fresh Push set, 13000-13099, for both models both ways. docs/results/more_push_demos
  $FRV train --config config/train_vla_v13.yaml && $FRV export --checkpoint models/vla_v13 --out models/vla_v13 \
      --int8 --dataset data/demos_2cam_base
  D="$OUT/more_push_demos" && mkdir -p "$D" && PIN_SPLICE=0  # the stop-29 defaults
  eval_sets models/vla_v13 vla_v13 "$D" '' push:9000:100 $PUSH $PNP reach:3000:50 reach:5000:100 reach:7000:50 \
      push:13000:100
  eval_sets models/vla_v13 vla_v13_ensemble "$D" 'splice_mode_by_task=[push:ensemble]' push:9000:100 $PUSH push:13000:100
  eval_sets models/vla_v9 vla_v9 "$D" '' push:13000:100
  eval_sets models/vla_v9 vla_v9_ensemble "$D" 'splice_mode_by_task=[push:ensemble]' push:13000:100
  for task in push pick_and_place reach; do  # through the node graph
    $FRV sim --task "$task" --episodes 20 --seed 3000 --checkpoint models/vla_v13 --json "$D/sim_${task}_vla_v13.json"
  done
  # stop 30: one more fresh Push set, 17000-17099, run once with each splice setting after nothing else changed
  eval_sets models/vla_v13 vla_v13 "$D" '' push:17000:100
  eval_sets models/vla_v13 vla_v13_ensemble "$D" 'splice_mode_by_task=[push:ensemble]' push:17000:100
  eval_sets models/vla_v13 vla_v13 "$D" '' push:19000:100 pick_and_place:19000:50 reach:19000:50
  # stop 32, on the AMD VM: fresh sets, and Push 3000-3049 again (the same episodes as on the Intel VM)
  eval_sets models/vla_v13 vla_v13 "$D" '' push:21000:100 push:23000:100 pick_and_place:21000:50 reach:21000:50
  eval_sets models/vla_v13 vla_v13_amd_vm "$D" '' push:3000:50
  PIN_SPLICE=1
  # vla_v9's sampler (stop 27): 10 Euler steps and Heun on the selection set, 3 steps on every set, and what 3 steps
  # save in latency (docs/results/finetuned_trunk/sampler_v9)
  D="$OUT/finetuned_trunk/sampler_v9" && mkdir -p "$D"
  $FRV export --checkpoint models/vla_v9 --num-steps 10 --out /tmp/vla_v9_k10
  $FRV export --checkpoint models/vla_v9 --method heun --out /tmp/vla_v9_heun
  $FRV export --checkpoint models/vla_v9 --num-steps 3 --out /tmp/vla_v9_k3
  eval_sets /tmp/vla_v9_k10 vla_v9_k10 "$D" '' push:9000:100
  eval_sets /tmp/vla_v9_heun vla_v9_heun "$D" '' push:9000:100
  eval_sets /tmp/vla_v9_k3 vla_v9_k3 "$D" '' push:9000:100 $PUSH $PNP reach:5000:100
  for c in models/vla_v9 /tmp/vla_v9_k3; do
    $FRV bench --sections backends --backends onnxruntime --checkpoint $c --json "$D/backends_$(basename $c).json"
  done
  i=0 && for c in models/vla_v9 /tmp/vla_v9_k3 models/vla_v9 /tmp/vla_v9_k3; do
    i=$((i + 1)) && $FRV bench --sections replay --pipelines flow_only --rounds 3 --frames 300 --checkpoint $c \
        --json "$D/replay_$(basename $c)_$i.json"
  done
  # vla_v9's sampler temperature rechecked: noise std 0 / 0.5 on a fresh set, then 0.5 on the evaluation sets
  D="$OUT/finetuned_trunk/noise_scale" && mkdir -p "$D"
  for ns in 0 05; do $FRV export --checkpoint models/vla_v9 --noise-scale "${ns/05/0.5}" --out /tmp/vla_v9_ns$ns; done
  for c in models/vla_v9 /tmp/vla_v9_ns0 /tmp/vla_v9_ns05; do
    OMP_NUM_THREADS=1 $FRV eval "${PIN[@]}" --in-process --task push --episodes 50 --seed 9000 --checkpoint $c --backend onnxruntime \
        --pipelines flow_only --json "$D/push_seed9000_50_$(basename $c).json"
  done
  for sn in 3000:50 5000:50 7000:50 0:100; do
    OMP_NUM_THREADS=1 $FRV eval "${PIN[@]}" --in-process --task push --episodes ${sn#*:} --seed ${sn%:*} --checkpoint /tmp/vla_v9_ns05 \
        --backend onnxruntime --pipelines flow_only --json "$D/push_seed${sn%:*}_${sn#*:}_vla_v9_ns05.json"
  done
  # on the GPU machine: the CUDA-graph tests and the policy step's GPU latency (docs/results/gpu_h200)
  #   python3 -m pytest -q test/core/backends/test_gpu_backends.py
  #   $FRV bench --sections backends --backends torch torch-cudagraph --device cuda --checkpoint models/vla_v9 [--precision bf16]
  # the shipped multi-task model: vla_v5 trained 3,000 steps more on a demonstration subset (docs/results/dagger)
  mkdir -p "$OUT/dagger"
  $FRV train --config config/train_vla_v6.yaml && $FRV export --checkpoint models/vla_v6 --out models/vla_v6 --int8 \
      --dataset data/demos_2cam_base
  five_sets models/vla_v6 vla_v6 "$OUT/dagger"
  OMP_NUM_THREADS=1 $FRV eval "${PIN[@]}" --in-process --task reach --episodes 100 --seed 5000 --checkpoint models/vla_v6 \
      --backend onnxruntime --pipelines flow_only --json "$OUT/dagger/reach_seed5000_100_vla_v6.json"
  for m in vla_v5 vla_v6; do
    OMP_NUM_THREADS=1 $FRV eval "${PIN[@]}" --in-process --task push --episodes 100 --seed 0 --checkpoint models/$m \
        --backend onnxruntime --pipelines flow_only --json "$OUT/dagger/push_seed0_100_$m.json"
  done
  for scenario in heavy_cube slippery_zone external_push; do for seed in 0 100; do  # RAG revisits on vla_v6
    $FRV eval "${PIN[@]}" --in-process --task push --scenario "$scenario" --situations 10 --episodes 40 --seed $seed \
        --checkpoint models/vla_v6 --pipelines flow_only parallel --json "$OUT/rag_revisits/vla_v6/${scenario}_seed$seed.json"
  done; done
  for task in pick_and_place push; do  # through the node graph (lockstep, parallel)
    $FRV sim "${PIN[@]}" --task "$task" --episodes 20 --seed 3000 --checkpoint models/vla_v6 --json "$OUT/dagger/sim_${task}_vla_v6.json"
  done
  # the shipped multi-task model: vla_v6's weights sampling from noise of std 0.25 (docs/results/noise_scale);
  # the scale chosen on seeds 7000-7049 among 1, 0.5 and 0.25
  mkdir -p "$OUT/noise_scale/sweep_seed7000" "$OUT/rag_revisits/vla_v6_ns025"
  for s in 0.5 0.25 0.125 0.0; do
    rm -rf "/tmp/vla_v6_noise$s" && $FRV export --checkpoint models/vla_v6 --noise-scale $s --out "/tmp/vla_v6_noise$s"
  done
  for cs in models/vla_v6:1.0 /tmp/vla_v6_noise0.5:0.5 /tmp/vla_v6_noise0.25:0.25 /tmp/vla_v6_noise0.125:0.125; do
    for task in reach push pick_and_place; do
      OMP_NUM_THREADS=1 $FRV eval "${PIN[@]}" --in-process --task $task --episodes 50 --seed 7000 --checkpoint "${cs%:*}" \
          --backend onnxruntime --pipelines flow_only --json "$OUT/noise_scale/sweep_seed7000/${task}_seed7000_noise${cs#*:}.json"
    done
  done
  OMP_NUM_THREADS=1 $FRV eval "${PIN[@]}" --in-process --task push --episodes 50 --seed 7000 --checkpoint /tmp/vla_v6_noise0.0 \
      --backend onnxruntime --pipelines flow_only --json "$OUT/noise_scale/sweep_seed7000/push_seed7000_noise0.0.json"
  $FRV export --checkpoint models/vla_v6 --noise-scale 0.25 --out models/vla_v6_ns025 --int8 --dataset data/demos_2cam_base
  five_sets models/vla_v6_ns025 vla_v6_ns025 "$OUT/noise_scale"
  for tsn in reach:5000:100 push:0:100; do
    IFS=: read -r task seed n <<< "$tsn"
    OMP_NUM_THREADS=1 $FRV eval "${PIN[@]}" --in-process --task $task --episodes $n --seed $seed --checkpoint models/vla_v6_ns025 \
        --backend onnxruntime --pipelines flow_only --json "$OUT/noise_scale/${task}_seed${seed}_${n}_vla_v6_ns025.json"
  done
  for scenario in heavy_cube slippery_zone external_push; do for seed in 0 100; do  # RAG revisits on vla_v6_ns025
    $FRV eval "${PIN[@]}" --in-process --task push --scenario "$scenario" --situations 10 --episodes 40 --seed $seed \
        --checkpoint models/vla_v6_ns025 --pipelines flow_only parallel \
        --json "$OUT/rag_revisits/vla_v6_ns025/${scenario}_seed$seed.json"
  done; done
  mkdir -p "$OUT/rag_revisits/vla_v6_ns025_seed200"  # a third set of situations (stop 22)
  for scenario in heavy_cube slippery_zone external_push; do
    $FRV eval "${PIN[@]}" --in-process --task push --scenario "$scenario" --situations 10 --episodes 40 --seed 200 \
        --checkpoint models/vla_v6_ns025 --pipelines flow_only parallel \
        --json "$OUT/rag_revisits/vla_v6_ns025_seed200/${scenario}_seed200.json"
  done
  mkdir -p "$OUT/rag_revisits/misalignment_speed_up"  # stop 23: speed up after a misalignment (not adopted)
  for scenario in heavy_cube slippery_zone external_push; do for seed in 0 100 200; do
    OMP_NUM_THREADS=1 $FRV eval "${PIN[@]}" --in-process --task push --scenario "$scenario" --situations 10 --episodes 40 --seed $seed \
        --checkpoint models/vla_v6_ns025 --pipelines parallel --set rag_monitor.misalignment_scale=1.5 \
        --json "$OUT/rag_revisits/misalignment_speed_up/${scenario}_seed$seed.json"
  done; done
  mkdir -p "$OUT/sparse_projection_ab/revisits"  # stop 24: the monitor's sparse visual projection (not the default)
  for scenario in heavy_cube slippery_zone external_push; do for seed in 0 100 200; do
    OMP_NUM_THREADS=1 $FRV eval "${PIN[@]}" --in-process --task push --scenario "$scenario" --situations 10 --episodes 40 --seed $seed \
        --checkpoint models/vla_v6_ns025 --pipelines parallel --set rag_monitor.visual_projection=sparse \
        --json "$OUT/sparse_projection_ab/revisits/${scenario}_seed$seed.json"
  done; done
  D="$OUT/rag_revisits/node_graph_vla_v6_ns025" && mkdir -p "$D"  # the same through the node graph
  for scenario in heavy_cube slippery_zone external_push; do for seed in 0 100; do
    $FRV eval "${PIN[@]}" --task push --scenario "$scenario" --situations 10 --episodes 40 --seed $seed \
        --checkpoint models/vla_v6_ns025 --pipelines parallel --json "$D/${scenario}_seed$seed.json"
  done; done
  for run in 2 3; do for ss in heavy_cube:0 slippery_zone:0 slippery_zone:100; do  # the closest three, twice more
    $FRV eval "${PIN[@]}" --task push --scenario "${ss%:*}" --situations 10 --episodes 40 --seed "${ss#*:}" \
        --checkpoint models/vla_v6_ns025 --pipelines parallel --json "$D/${ss%:*}_seed${ss#*:}_$run.json"
  done; done
  $FRV eval "${PIN[@]}" --task push --scenario heavy_cube --situations 10 --episodes 40 --seed 0 --checkpoint models/vla_v6_ns025 \
      --pipelines flow_only --json "$D/heavy_cube_seed0_flow_only.json"
  for task in pick_and_place push; do  # through the node graph (lockstep, parallel)
    $FRV sim "${PIN[@]}" --task "$task" --episodes 20 --seed 3000 --checkpoint models/vla_v6_ns025 \
        --json "$OUT/noise_scale/sim_${task}_vla_v6_ns025.json"
  done
  $FRV sim "${PIN[@]}" --task push --episodes 20 --seed 3000 --checkpoint models/vla_v6_ns025 --pipeline flow_only \
      --json "$OUT/noise_scale/sim_push_flow_only_vla_v6_ns025.json"
  # do the frozen tokens say where the Push cube and target are? linear probes at three trunk depths (stop 22)
  mkdir -p "$OUT/token_probe"
  .venv/bin/python scripts/probe_visual_tokens.py --data data/demos_2cam_base --json "$OUT/token_probe/push_positions.json"
  # stop 23: the Push expert with noisy cube / target positions (no rendering, ~10 min)
  .venv/bin/python scripts/expert_perception_noise.py --episodes 200 --seed 3000 --experts 0.015:1.0 0.04:0.3 \
      --json "$OUT/perception_noise/push_expert_seed3000_200.json"
  # experiment, not shipped: the same plus vla_v5's DAgger-relabelled rollouts (the first, naive labelling's
  # results are docs/results/dagger/*_naive*; its code is commit 5796c4d)
  $FRV train --config config/train_vla_v6.yaml --relabelled-data data/dagger_v5 --out models/vla_v6_dagger &&
      $FRV export --checkpoint models/vla_v6_dagger --out models/vla_v6_dagger --int8 --dataset data/demos_2cam_base
  five_sets models/vla_v6_dagger vla_v6_dagger "$OUT/dagger"
  $FRV train --config config/train_vla_mlp_v2.yaml &&
      $FRV export --checkpoint models/vla_mlp_v2 --out models/vla_mlp_v2 --dataset data/demos_2cam ;;
results|all)
  # issue 2 / 3: success through the real node graph (lockstep), shipped Reach model
  $FRV sim "${PIN[@]}" --task reach --episodes 50 --seed 1 --checkpoint models/reach_v2 --json "$OUT/sim_reach_v2.json"
  $FRV eval "${PIN[@]}" --in-process --task reach --episodes 200 --seed 5000 --checkpoint models/reach_v2 --pipelines flow_only \
      --json "$OUT/inprocess_reach_v2_200.json"
  for task in pick_and_place push; do  # the multi-task model through the node graph
    $FRV sim "${PIN[@]}" --task "$task" --episodes 20 --seed 3000 --checkpoint models/vla_v5 --json "$OUT/sim_${task}_vla_v5.json"
  done
  for task in pick_and_place push reach; do  # the shipped multi-task model (stop 25) through the node graph
    $FRV sim "${PIN[@]}" --task "$task" --episodes 20 --seed 3000 --checkpoint models/vla_v9 \
        --json "$OUT/finetuned_trunk/sim_${task}_vla_v9.json"
  done
  # issue 4 on the shipped vla_v9 (stop 25): the nine revisit sets in-process, four of them through the node graph
  mkdir -p "$OUT/rag_revisits/vla_v9" "$OUT/rag_revisits/node_graph_vla_v9"
  for scenario in heavy_cube slippery_zone external_push; do for seed in 0 100 200; do
    $FRV eval "${PIN[@]}" --in-process --task push --scenario "$scenario" --situations 10 --episodes 40 --seed $seed \
        --checkpoint models/vla_v9 --pipelines flow_only parallel --json "$OUT/rag_revisits/vla_v9/${scenario}_seed$seed.json"
  done; done
  for ss in heavy_cube:100 slippery_zone:100 heavy_cube:0 external_push:100; do
    $FRV eval "${PIN[@]}" --task push --scenario "${ss%:*}" --situations 10 --episodes 40 --seed "${ss#*:}" --checkpoint models/vla_v9 \
        --pipelines flow_only parallel --json "$OUT/rag_revisits/node_graph_vla_v9/${ss%:*}_seed${ss#*:}.json"
  done
  # stop 33: the same four node-graph sets with the monitor's retrieve_after command (now the default) and features,
  # alternated, parallel only, at today's defaults (no PIN: Push chunks spliced newest-only), flow_only in-process
  # (which the node graph reproduces episode for episode); then vla_v13 through the node graph with command
  R="$OUT/deferred_retrieval_ab/revisits"; mkdir -p "$R"
  for ss in heavy_cube:100 slippery_zone:100 heavy_cube:0 external_push:100; do
    OMP_NUM_THREADS=1 $FRV eval --in-process --task push --scenario "${ss%:*}" --situations 10 --episodes 40 --seed "${ss#*:}" \
        --checkpoint models/vla_v9 --pipelines flow_only --json "$R/${ss%:*}_seed${ss#*:}_flow_only_in_process.json"
  done
  for ss in heavy_cube:100 slippery_zone:100 heavy_cube:0 external_push:100; do for timing in command features; do
    $FRV eval --task push --scenario "${ss%:*}" --situations 10 --episodes 40 --seed "${ss#*:}" --checkpoint models/vla_v9 \
        --pipelines parallel --set rag_monitor.retrieve_after=$timing --json "$R/${ss%:*}_seed${ss#*:}_$timing.json"
  done; done
  for ss in heavy_cube:100 slippery_zone:100 heavy_cube:0 external_push:100; do for timing in features command; do  # again
    $FRV eval --task push --scenario "${ss%:*}" --situations 10 --episodes 40 --seed "${ss#*:}" --checkpoint models/vla_v9 \
        --pipelines parallel --set rag_monitor.retrieve_after=$timing --json "$R/${ss%:*}_seed${ss#*:}_${timing}_2.json"
  done; done
  for task in push pick_and_place reach; do
    $FRV sim --task $task --episodes 20 --seed 3000 --checkpoint models/vla_v13 --set rag_monitor.retrieve_after=command \
        --json "$OUT/deferred_retrieval_ab/sim_${task}_vla_v13_command.json"
  done
  # issue 4: the learned failure head on vla_v9's own rollouts, scored on held-out ones (docs/results/failure_head)
  mkdir -p "$OUT/failure_head"
  OMP_NUM_THREADS=1 $FRV failure-head --checkpoint models/vla_v9 --episodes 25 --train-seed 0 --test-seed 5000 \
      --json "$OUT/failure_head/vla_v9.json"
  OMP_NUM_THREADS=1 $FRV failure-head --checkpoint models/vla_v9 --episodes 50 --train-seed 0 --test-seed 5000 \
      --json "$OUT/failure_head/vla_v9_50.json"
  for run in 2 3; do  # slippery_zone 100-109 again, parallel only
    $FRV eval "${PIN[@]}" --task push --scenario slippery_zone --situations 10 --episodes 40 --seed 100 --checkpoint models/vla_v9 \
        --pipelines parallel --json "$OUT/rag_revisits/node_graph_vla_v9/slippery_zone_seed100_parallel_$run.json"
  done
  # issue 3: the multi-task model, its MLP-expert baseline and the scripted experts' ceiling on the same seeds
  # (vla_v5: reach_data_scaling/ from the train section; vla_v3, the previous one, is trained there too)
  for task in reach push pick_and_place; do
    $FRV eval "${PIN[@]}" --in-process --task "$task" --episodes 50 --seed 3000 --checkpoint models/vla_mlp_v2 \
        --backend onnxruntime --pipelines flow_only --json "$OUT/${task}_vla_mlp_v2_onnxruntime.json"
  done
  rm -rf /tmp/reproduce_experts
  $FRV collect --task all --episodes 50 --seed 3000 --out /tmp/reproduce_experts --workers 2 --no-progress
  cp /tmp/reproduce_experts/meta.json "$OUT/expert_ceiling_seed3000.json"
  # issue 7: ablation (same episodes and seeds for every pipeline), markdown + plots
  $FRV eval "${PIN[@]}" --task reach --pipelines flow_only rag_only sequential parallel --episodes 20 --seed 0 \
      --checkpoint models/reach_v2 --json "$OUT/ablation.json" --report-dir "$OUT/ablation"
  $FRV eval "${PIN[@]}" --task reach --scenario shifted_camera --pipelines flow_only rag_only sequential parallel \
      --episodes 20 --seed 0 --checkpoint models/reach_v2 --json "$OUT/ablation_shifted_camera.json" \
      --report-dir "$OUT/ablation_shifted_camera"
  # issue 4: RAG memory vs injected failures (flow_only vs parallel, same seeds)
  for scenario in heavy_cube slippery_zone external_push; do
    $FRV eval "${PIN[@]}" --in-process --task push --scenario "$scenario" --episodes 40 --seed 0 --checkpoint models/vla_v5 \
        --pipelines flow_only parallel --json "$OUT/rag_push_$scenario.json"
  done
  $FRV eval "${PIN[@]}" --in-process --task reach --scenario shifted_camera --episodes 60 --seed 0 --checkpoint models/reach_v2 \
      --pipelines flow_only parallel --json "$OUT/rag_reach_shifted_camera.json"
  # issue 4, revisit protocol: 10 situations, each met 4 times (docs/results/rag_revisits: made at stop 17, when
  # transform escalation was off by default; the params file below turns it off at HEAD)
  mkdir -p "$OUT/rag_revisits/escalation_gated"
  sed "s/^    transform_confidence: 1.0/    transform_confidence: 1.0\n    escalation_per_failure: 0.0/" config/stack.yaml \
      > "$OUT/rag_revisits/escalation_off.yaml"
  for scenario in heavy_cube slippery_zone external_push; do
    for seed in 0 100; do
      $FRV eval "${PIN[@]}" --in-process --task push --scenario "$scenario" --situations 10 --episodes 40 --seed $seed \
          --checkpoint models/vla_v5 --pipelines flow_only parallel --params "$OUT/rag_revisits/escalation_off.yaml" \
          --json "$OUT/rag_revisits/${scenario}_seed$seed.json"
      # stop 19, the defaults (escalation in the case's own state only); flow_only does not use the memory
      $FRV eval "${PIN[@]}" --in-process --task push --scenario "$scenario" --situations 10 --episodes 40 --seed $seed \
          --checkpoint models/vla_v5 --pipelines parallel --json "$OUT/rag_revisits/escalation_gated/${scenario}_seed$seed.json"
    done
  done
  $FRV eval "${PIN[@]}" --in-process --task reach --scenario shifted_camera --episodes 60 --seed 0 --checkpoint models/reach_v2 \
      --pipelines parallel --json "$OUT/rag_revisits/escalation_gated/reach_shifted_camera_random.json"
  for scenario in heavy_cube slippery_zone external_push; do  # random situations, as rag_push_*.json
    $FRV eval "${PIN[@]}" --in-process --task push --scenario "$scenario" --episodes 40 --seed 0 --checkpoint models/vla_v5 \
        --pipelines parallel --json "$OUT/rag_revisits/escalation_gated/rag_push_${scenario}_random.json"
  done
  rm -f "$OUT/rag_revisits/escalation_off.yaml"
  # the same through the ROS 2 node graph (lockstep), one of them
  $FRV eval "${PIN[@]}" --task push --scenario heavy_cube --situations 10 --episodes 40 --seed 0 --checkpoint models/vla_v5 \
      --pipelines flow_only parallel sequential --json "$OUT/rag_revisits/node_graph_heavy_cube_seed0.json"
  # stop 19, all six through the node graph at the defaults (EventsExecutor, escalation in the case's own state):
  # parallel only, flow_only once (it matches in-process episode for episode) (rag_revisits/node_graph_stop19)
  mkdir -p "$OUT/rag_revisits/node_graph_stop19"
  for scenario in heavy_cube slippery_zone external_push; do
    for seed in 0 100; do
      P=parallel; [ "$scenario:$seed" = heavy_cube:0 ] && P="flow_only parallel"
      $FRV eval "${PIN[@]}" --task push --scenario "$scenario" --situations 10 --episodes 40 --seed $seed --checkpoint models/vla_v5 \
          --pipelines $P --json "$OUT/rag_revisits/node_graph_stop19/${scenario}_seed$seed.json"
    done
  done
  # ... and heavy_cube 0-9 with escalation off / on (the defaults), alternated (rag_revisits/node_graph_escalation_ab)
  A="$OUT/rag_revisits/node_graph_escalation_ab"; mkdir -p "$A"
  sed "s/^    transform_confidence: 1.0/    transform_confidence: 1.0\n    escalation_per_failure: 0.0/" config/stack.yaml > "$A/off.yaml"
  cp config/stack.yaml "$A/on.yaml"
  for i in 1 2 3; do for v in off on; do
    $FRV eval "${PIN[@]}" --task push --scenario heavy_cube --situations 10 --episodes 40 --seed 0 --checkpoint models/vla_v5 \
        --pipelines parallel --params "$A/$v.yaml" --json "$A/${v}_$i.json"
  done; done
  rm -f "$A/off.yaml" "$A/on.yaml"
  # ... and heavy_cube 0-9 at the defaults since alarm_wait_ms (20), three runs (rag_revisits/node_graph_alarm_wait)
  mkdir -p "$OUT/rag_revisits/node_graph_alarm_wait"
  for i in 1 2 3; do
    $FRV eval "${PIN[@]}" --task push --scenario heavy_cube --situations 10 --episodes 40 --seed 0 --checkpoint models/vla_v5 \
        --pipelines parallel --json "$OUT/rag_revisits/node_graph_alarm_wait/heavy_cube_seed0_$i.json"
  done
  for sc in heavy_cube:100 slippery_zone:0 external_push:0 slippery_zone:100 external_push:100; do  # the other five
    $FRV eval "${PIN[@]}" --task push --scenario ${sc%:*} --situations 10 --episodes 40 --seed ${sc#*:} --checkpoint models/vla_v5 \
        --pipelines parallel --json "$OUT/rag_revisits/node_graph_alarm_wait/${sc%:*}_seed${sc#*:}.json"
  done
  for i in 2 3; do  # slippery_zone 0-9, the scenario that met the goal: two more runs
    $FRV eval "${PIN[@]}" --task push --scenario slippery_zone --situations 10 --episodes 40 --seed 0 --checkpoint models/vla_v5 \
        --pipelines parallel --json "$OUT/rag_revisits/node_graph_alarm_wait/slippery_zone_seed0_$i.json"
  done
  # issues 3 / 5: sampler steps vs success, same weights (docs/results/sampler_steps), on the previous shipped
  # multi-task model vla_v3 (5 steps; models/vla_v3 comes from the train section)
  S="$OUT/sampler_steps"; mkdir -p "$S"; rm -rf /tmp/reproduce_ks
  for k in 10 3; do
    $FRV export --checkpoint models/vla_v3 --num-steps $k --out /tmp/reproduce_ks/vla_v3_k$k --dataset data/demos_2cam \
        --int8
  done
  for task in reach push; do  # int8 at the trained 10 steps (README int8 table)
    $FRV eval "${PIN[@]}" --in-process --task $task --episodes 50 --seed 3000 --checkpoint /tmp/reproduce_ks/vla_v3_k10 \
        --backend onnxruntime-int8 --pipelines flow_only --json "$S/${task}_seed3000_vla_v3_k10_int8.json"
  done
  for k in 10 5 3; do  # the shipped reach_v2 samples with 5
    C=/tmp/reproduce_ks/reach_v2_k$k
    if [ $k = 5 ]; then C=models/reach_v2; else $FRV export --checkpoint models/reach_v2 --num-steps $k --out "$C"; fi
    $FRV eval "${PIN[@]}" --in-process --task reach --episodes 100 --seed 3000 --checkpoint "$C" \
        --backend onnxruntime --pipelines flow_only --json "$S/reach_seed3000_reach_v2_k$k.json"
  done
  for k in 10 5 3; do
    C=/tmp/reproduce_ks/vla_v3_k$k; [ $k = 5 ] && C=models/vla_v3
    five_sets "$C" vla_v3_k$k "$S"
  done
  # issue 3: does chunk execution limit Push? (tuning seeds 5000-5049, vla_v3 at its trained 10 steps;
  # docs/results/push_execution_tuning)
  T="$OUT/push_execution_tuning"; mkdir -p "$T"
  sed "s/    control_period_s: 0.04/    control_period_s: 0.04\n    splice_mode: replace/" config/stack.yaml > "$T/p_replace.yaml"
  for d in 0.0 2.0; do
    sed "s/    control_period_s: 0.04/    control_period_s: 0.04\n    ensemble_decay: $d/" config/stack.yaml > "$T/p_d$d.yaml"
  done
  for c in base replace d0.0 d2.0; do
    P="$T/p_$c.yaml"; [ "$c" = base ] && P=config/stack.yaml
    $FRV eval "${PIN[@]}" --in-process --task push --episodes 50 --seed 5000 --checkpoint /tmp/reproduce_ks/vla_v3_k10 \
        --backend onnxruntime --pipelines flow_only --params "$P" --json "$T/vla_v3_seed5000_$c.json"
  done
  rm -f "$T"/p_*.yaml
  # issue 7: lockstep replay of a recorded run reproduces its commands
  rm -rf /tmp/reproduce_bag
  $FRV sim "${PIN[@]}" --task reach --episodes 3 --seed 11 --pipeline flow_only --record /tmp/reproduce_bag
  $FRV replay /tmp/reproduce_bag --rate 0 --pipeline flow_only --json "$OUT/replay_lockstep.json"
  # issue 6: int8 vs fp32 success (same pipeline logic in-process, same episodes)
  for backend in onnxruntime onnxruntime-int8; do
    $FRV eval "${PIN[@]}" --in-process --task reach --episodes 100 --seed 3000 --checkpoint models/reach_v2 \
        --backend "$backend" --pipelines flow_only --json "$OUT/reach_v2_$backend.json"
    for task in reach push; do
      $FRV eval "${PIN[@]}" --in-process --task "$task" --episodes 50 --seed 3000 --checkpoint models/vla_v5 \
          --backend "$backend" --pipelines flow_only --json "$OUT/${task}_vla_v5_$backend.json"
    done
  done
  $FRV eval "${PIN[@]}" --in-process --task push --episodes 50 --seed 5000 --checkpoint models/vla_v5 --backend onnxruntime-int8 \
      --pipelines flow_only --json "$OUT/push_seed5000_vla_v5_onnxruntime-int8.json"  # fp32: reach_data_scaling/
  # int8 on Push over 200 episodes, and torch fp32 as the control for what equivalent numerics change
  # (docs/results/int8_recipe; the earlier recipe's file was made at commit 3b5dd24)
  mkdir -p "$OUT/int8_recipe"
  $FRV export --checkpoint models/vla_v5 --out models/vla_v5 --int8 --dataset data/demos_2cam_v5 \
      --int8-errors "$OUT/int8_recipe/group_errors_vla_v5_push.json"  # action error per int8 MatMul group
  for b in onnxruntime:fp32 onnxruntime-int8:int8 torch:torch; do
    $FRV eval "${PIN[@]}" --in-process --task push --episodes 200 --seed 7000 --checkpoint models/vla_v5 --backend "${b%:*}" \
        --pipelines flow_only --json "$OUT/int8_recipe/push_seed7000_200_vla_v5_${b#*:}.json"
  done
  for b in onnxruntime:fp32 onnxruntime-int8:int8; do
    $FRV eval "${PIN[@]}" --in-process --task push --episodes 200 --seed 7200 --checkpoint models/vla_v5 --backend "${b%:*}" \
        --pipelines flow_only --json "$OUT/int8_recipe/push_seed7200_200_vla_v5_${b#*:}.json"
  done
  [ "${1:-all}" = all ] && "$0" bench ;;
bench)
  # issues 4 / 5 / 6: stack latency per pipeline and layout, retrieval, backends
  $FRV bench --checkpoint models/reach_v2 --frames 300 --json "$OUT/bench_stop33.json"  # bench_stop1[4-9].json, bench_stop2[1-8]*.json, bench_stop3[02].json, bench.json: earlier stops
  # stop 32, parallel - flow_only replicates on the AMD VM, alternated with the merger's alarm wait off
  # (docs/results/parallel_gap_stop32; default_0.json: the first default run, before e2e_ms_by_path existed)
  for i in 1 2 3 4; do
    $FRV bench --sections replay --checkpoint models/reach_v2 --frames 300 --rounds 3 --pipelines flow_only parallel \
        --json "$OUT/parallel_gap_stop32/default_$i.json"
    $FRV bench --sections replay --checkpoint models/reach_v2 --frames 300 --rounds 3 --pipelines flow_only parallel \
        --set action_merger.alarm_wait_ms=0 --json "$OUT/parallel_gap_stop32/alarm_wait_0_$i.json"
  done
  # stop 32, the sparse visual projection alternated with three more default runs
  for i in 1 2 3; do
    $FRV bench --sections replay --checkpoint models/reach_v2 --frames 300 --rounds 3 --pipelines flow_only parallel \
        --set rag_monitor.visual_projection=sparse --json "$OUT/parallel_gap_stop32/sparse_projection_$i.json"
    $FRV bench --sections replay --checkpoint models/reach_v2 --frames 300 --rounds 3 --pipelines flow_only parallel \
        --json "$OUT/parallel_gap_stop32/default_$((i + 4)).json"
  done
  # stop 32, the monitor's subscriptions alone: flow_only with and without scripts/listener_neighbour.py, alternated
  for i in 1 2 3; do
    .venv/bin/python scripts/listener_neighbour.py & LN=$! && sleep 3
    $FRV bench --sections replay --checkpoint models/reach_v2 --frames 300 --rounds 3 --pipelines flow_only \
        --json "$OUT/parallel_gap_stop32/listener_neighbour_with_$i.json"
    kill -INT $LN && wait $LN
    $FRV bench --sections replay --checkpoint models/reach_v2 --frames 300 --rounds 3 --pipelines flow_only \
        --json "$OUT/parallel_gap_stop32/listener_neighbour_without_$i.json"
  done
  # stop 33, the monitor's retrieval after the frame's command (rag_monitor.retrieve_after=command) alternated with
  # the defaults of the time (retrieve_after=features, run then without --set; docs/results/deferred_retrieval_ab),
  # 2 pairs then 3 in reverse order
  D33="$OUT/deferred_retrieval_ab"; mkdir -p "$D33"
  for i in 1 2 3 4 5; do
    order="features command"; [ $i -ge 3 ] && order="command features"
    for timing in $order; do
      $FRV bench --sections replay --checkpoint models/reach_v2 --frames 300 --rounds 3 --pipelines flow_only parallel \
          --set rag_monitor.retrieve_after=$timing --json "$D33/${timing}_$i.json"
    done
  done
  for i in 6 7 8; do  # three more with command, after it became the default
    $FRV bench --sections replay --checkpoint models/reach_v2 --frames 300 --rounds 3 --pipelines flow_only parallel \
        --set rag_monitor.retrieve_after=command --json "$D33/command_$i.json"
  done
  .venv/bin/python scripts/parallel_gap_runs.py "$D33"/features_*.json "$D33"/command_*.json --json "$D33/summary.json"
  for i in 2 3; do  # the full bench twice more at the new default (bench_stop33.json is the first)
    $FRV bench --checkpoint models/reach_v2 --frames 300 --json "$D33/full_bench_$i.json"
  done
  .venv/bin/python scripts/parallel_gap_runs.py "$D33"/command_*.json "$OUT/bench_stop33.json" "$D33"/full_bench_*.json \
      --json "$D33/summary_since_the_change.json"
  # full_bench_first.json: the bench_stop32 command, run first at 5c0219f (before the gap's interval existed)
  .venv/bin/python scripts/parallel_gap_runs.py "$OUT/parallel_gap_stop32/full_bench_first.json" \
      "$OUT"/parallel_gap_stop32/default_*.json "$OUT/bench_stop32.json" "$OUT"/parallel_gap_stop32/alarm_wait_0_*.json \
      "$OUT"/parallel_gap_stop32/sparse_projection_*.json --json "$OUT/parallel_gap_stop32/summary.json"
  # the Intel VM's pooled runs at the defaults, stops 23-30 (the files listed in README "Latency")
  .venv/bin/python scripts/parallel_gap_runs.py "$OUT"/bench_stop2[3-8]*.json "$OUT/bench_stop30.json" \
      "$OUT"/all_clear_ab/after_*.json "$OUT"/cpu_affinity_ab/free_*.json "$OUT/retrieval_after_chunk_ab/default_3.json" \
      "$OUT"/sparse_projection_ab/gaussian_*.json --json "$OUT/parallel_gap_stop32/summary_intel_vm.json"
  # stop 23, the monitor's all-clear after an alarm (docs/results/all_clear_ab): before = c76373f (pooled rounds, no
  # all-clear), after = 0e7b769; the paced backend timings at d023a92 (this command, any later commit)
  ROOT=$PWD; A="$ROOT/$OUT/all_clear_ab"; mkdir -p "$A"
  git worktree add -f /tmp/frv_before c76373f && git worktree add -f /tmp/frv_after 0e7b769
  (cd /tmp/frv_before
   "$ROOT/$FRV" bench --sections replay --checkpoint models/reach_v2 --frames 300 --rounds 3 --json "$A/before_replay_3_rounds.json"
   "$ROOT/$FRV" bench --sections replay --checkpoint models/reach_v2 --frames 300 --rounds 2 --pipelines flow_only parallel \
       --json "$A/before_replay_2_rounds_paths.json")
  (cd /tmp/frv_after
   "$ROOT/$FRV" bench --sections replay --checkpoint models/reach_v2 --frames 300 --rounds 3 --json "$A/after_replay_3_rounds.json"
   "$ROOT/$FRV" bench --sections replay --checkpoint models/reach_v2 --frames 300 --rounds 5 --pipelines flow_only parallel \
       --json "$A/after_replay_5_rounds.json")
  git worktree remove --force /tmp/frv_before; git worktree remove --force /tmp/frv_after
  $FRV bench --sections backends --checkpoint models/reach_v2 --iters 200 --backends onnxruntime onnxruntime-int8 \
      --json "$A/backends_paced.json"
  # stop 23, retrieval after the chunk (docs/results/retrieval_after_chunk_ab), scratch: f498c4f with the pipeline's
  # monitor mode made a default (runner.py: setdefault) and SCHED_IDLE in either mode (rag_monitor_node.py), run from
  # that checkout as `python -m flow_rag_vla_ros.cli bench --sections replay --checkpoint models/reach_v2 --frames 300
  # --rounds 3 --pipelines flow_only parallel --set rag_monitor.mode=sequential` twice; then the default:
  $FRV bench --sections replay --checkpoint models/reach_v2 --frames 300 --rounds 3 --pipelines flow_only parallel \
      --json "$OUT/retrieval_after_chunk_ab/default_3.json"
  # stop 23, pinning (docs/results/cpu_affinity_ab), alternated: the policy path on CPU 0 and the monitor on CPU 1, or free
  mkdir -p "$OUT/cpu_affinity_ab"
  for i in 1 2; do
    $FRV bench --sections replay --checkpoint models/reach_v2 --frames 300 --rounds 3 --pipelines flow_only parallel \
        --set 'vision_encoder.cpu_affinity=[0]' 'flow_policy.cpu_affinity=[0]' 'action_merger.cpu_affinity=[0]' \
        'rag_monitor.cpu_affinity=[1]' --json "$OUT/cpu_affinity_ab/pinned_$i.json"
    $FRV bench --sections replay --checkpoint models/reach_v2 --frames 300 --rounds 3 --pipelines flow_only parallel \
        --json "$OUT/cpu_affinity_ab/free_$i.json"
  done
  # stop 24, the monitor's visual projection (docs/results/sparse_projection_ab), alternated in one checkout
  for i in 1 2; do for kind in gaussian sparse; do
    $FRV bench --sections replay --checkpoint models/reach_v2 --frames 300 --rounds 3 --pipelines flow_only parallel \
        --set rag_monitor.visual_projection=$kind --json "$OUT/sparse_projection_ab/${kind}_$i.json"
  done; done
  .venv/bin/python scripts/sampler_contention.py --rounds 3 --frames 300 \
      --json "$OUT/sparse_projection_ab/sampler_contention.json"
  .venv/bin/python scripts/sampler_contention.py --rounds 3 --frames 300 --modes none embed_gaussian embed_sparse \
      --neighbour-blas-threads 0 --json "$OUT/sparse_projection_ab/sampler_contention_uncapped_blas.json"
  # bench_stop19_before_alarm_wait.json: the same command at commit 3796bdb (before alarm_wait_ms)
  # stop 18, the monitor's OpenMP cap (docs/results/monitor_openmp_fix): before = 034247b, after = 1eaed61, alternated,
  # each from its own checkout (`python -m` puts the working directory first on sys.path: PYTHONPATH is not enough)
  ROOT=$PWD; mkdir -p "$OUT/monitor_openmp_fix"
  git worktree add -f /tmp/frv_before 034247b && git worktree add -f /tmp/frv_after 1eaed61
  for i in 1 2; do for c in before after; do
    (cd /tmp/frv_$c && "$ROOT/$FRV" bench --sections replay --pipelines parallel --checkpoint models/reach_v2 --frames 300 \
        --set rag_monitor.worker_priority=normal --json "$ROOT/$OUT/monitor_openmp_fix/${c}_$i.json")
  done; done
  # stop 18, at 1eaed61 (all nodes single_threaded): monitor priority after the fix, replay (4 rounds, alternated) and
  # lockstep (docs/results/worker_priority_ab_stop18)
  W="$ROOT/$OUT/worker_priority_ab_stop18"; mkdir -p "$W"
  (cd /tmp/frv_after
   for i in 1 2 3 4; do for pr in idle_process normal; do
     "$ROOT/$FRV" bench --sections replay --pipelines flow_only parallel --checkpoint models/reach_v2 --frames 300 \
         --set rag_monitor.worker_priority=$pr --json "$W/${pr}_$i.json"
   done; done
   for pr in idle_process normal; do
     sed "s/^    transform_confidence: 1.0/    transform_confidence: 1.0\n    worker_priority: $pr/" config/stack.yaml > "$W/p_$pr.yaml"
     "$ROOT/$FRV" eval --task push --scenario heavy_cube --situations 5 --episodes 20 --seed 0 --checkpoint models/vla_v5 \
         --pipelines parallel --params "$W/p_$pr.yaml" --json "$W/node_graph_heavy_cube_5sit_$pr.json"
     rm -f "$W/p_$pr.yaml"
   done)
  git worktree remove --force /tmp/frv_before; git worktree remove --force /tmp/frv_after
  # stop 18, executors, alternated (docs/results/executor_ab), at the stop-18 commit dc192c2, whose stack.yaml
  # still had single_threaded defaults (the seds below rely on them)
  git worktree add -f /tmp/frv_stop18 dc192c2
  (cd /tmp/frv_stop18
    mkdir -p "$ROOT/$OUT/executor_ab"
    for i in 1 2; do for e in single_threaded:single events:events; do
      "$ROOT/$FRV" bench --sections replay --pipelines flow_only parallel --checkpoint models/reach_v2 --frames 300 \
          --set vision_encoder.executor=${e%:*} flow_policy.executor=${e%:*} action_merger.executor=${e%:*} \
          --json "$ROOT/$OUT/executor_ab/${e#*:}_$i.json"
    done; done
    # ... the sim in the loop, and the RAG revisit run through the node graph (parallel only; flow_only is deterministic)
    for i in 1 2; do for e in single_threaded events; do
      "$ROOT/$FRV" bench --sections stack --layouts processes --pipelines flow_only parallel --checkpoint models/reach_v2 --frames 300 \
          --set vision_encoder.executor=$e flow_policy.executor=$e action_merger.executor=$e --json "$ROOT/$OUT/executor_ab/sim_${e}_$i.json"
    done; done
    for i in 1 2; do for e in single_threaded events; do
      sed "s/executor: single_threaded/executor: $e/" config/stack.yaml > "$ROOT/$OUT/executor_ab/$e.yaml"
      "$ROOT/$FRV" eval --task push --scenario heavy_cube --situations 10 --episodes 40 --seed 0 --checkpoint models/vla_v5 \
          --pipelines parallel --params "$ROOT/$OUT/executor_ab/$e.yaml" --json "$ROOT/$OUT/executor_ab/node_graph_heavy_cube_seed0_${e}_$i.json"
      rm -f "$ROOT/$OUT/executor_ab/$e.yaml"
    done; done
    # node_graph_heavy_cube_seed0_events_a668246.json: the rag_revisits node-graph command at commit a668246 (events default)
    # all four stack nodes, the monitor included, on one executor or the other (executor_ab/all_nodes_*)
    for i in 1 2; do for e in single_threaded events; do
      "$ROOT/$FRV" bench --sections replay --pipelines flow_only parallel --checkpoint models/reach_v2 --frames 300 \
          --set vision_encoder.executor=$e flow_policy.executor=$e action_merger.executor=$e rag_monitor.executor=$e \
          --json "$ROOT/$OUT/executor_ab/all_nodes_${e}_$i.json"
    done; done)
  git worktree remove --force /tmp/frv_stop18
  # stop 19: all four stack nodes on each executor, the RAG revisit run through the node graph, alternated
  # (executor_ab/node_graph_all_nodes_*; the YAML is stack.yaml with every stack node's executor set, and transform
  # escalation off, as it was when these ran)
  for i in 1 2 3; do for e in events single_threaded; do
    sed -E -e "/^sim:/,/^vision_encoder:/! s/executor: [a-z_]+/executor: $e/" \
        -e "s/^    transform_confidence: 1.0/    transform_confidence: 1.0\n    escalation_per_failure: 0.0/" \
        config/stack.yaml > "$OUT/executor_ab/$e.yaml"
    $FRV eval "${PIN[@]}" --task push --scenario heavy_cube --situations 10 --episodes 40 --seed 0 --checkpoint models/vla_v5 \
        --pipelines parallel --params "$OUT/executor_ab/$e.yaml" --json "$OUT/executor_ab/node_graph_all_nodes_${e}_$i.json"
    rm -f "$OUT/executor_ab/$e.yaml"
  done; done
  # stop 19: alarm_wait_ms on (20, the default) and off, alternated replay pairs (docs/results/alarm_wait_ab)
  mkdir -p "$OUT/alarm_wait_ab"
  for i in 1 2; do for v in 20 0; do
    $FRV bench --sections replay --pipelines flow_only parallel --checkpoint models/reach_v2 --frames 300 \
        --set action_merger.alarm_wait_ms=$v --json "$OUT/alarm_wait_ab/alarm_wait_${v}_$i.json"
  done; done
  # stop 17 (before the OpenMP cap): monitor priority, lockstep node graph and camera-rate replay
  W="$OUT/worker_priority_ab_stop17"; mkdir -p "$W"
  for pr in idle_process normal nice; do
    sed "s/^    transform_confidence: 1.0/    transform_confidence: 1.0\n    worker_priority: $pr/" config/stack.yaml > "$W/p_$pr.yaml"
    $FRV eval "${PIN[@]}" --task push --scenario heavy_cube --situations 5 --episodes 20 --seed 0 --checkpoint models/vla_v5 \
        --pipelines parallel --params "$W/p_$pr.yaml" --json "$W/node_graph_heavy_cube_5sit_$pr.json"
    rm -f "$W/p_$pr.yaml"
  done
  for i in 1 2; do for pr in idle_process normal nice; do
    $FRV bench --sections replay --pipelines flow_only parallel --checkpoint models/reach_v2 --frames 300 \
        --set rag_monitor.worker_priority=$pr --json "$W/ab_${pr}_$i.json"
  done; done
  # backends again, alternated within each run (docs/results/backends_alternated)
  mkdir -p "$OUT/backends_alternated"
  for r in "" _2; do for m in reach_v2 vla_v5; do
    $FRV bench --sections backends --backends torch onnxruntime onnxruntime-int8 --checkpoint models/$m \
        --json "$OUT/backends_alternated/$m$r.json"
  done; done
  # repeats: the camera-rate replay only (p99 of 300 frames moves by a few ms between runs on a VM)
  $FRV bench --sections replay --pipelines flow_only parallel --frames 300 --checkpoint models/reach_v2 \
      --json "$OUT/bench_replay_rerun.json"
  $FRV bench --sections replay --frames 1000 --checkpoint models/reach_v2 --json "$OUT/bench_replay_1000_frames.json"
  # the monitor's scheduling, A/B alternated: idle vs nice (summarised in worker_priority_ab.json), then the
  # whole monitor process idle vs its retrieval thread only (docs/results/worker_priority_idle_process)
  for i in 1 2 3; do for prio in idle nice; do
    $FRV bench --sections replay --pipelines flow_only parallel --frames 300 --checkpoint models/reach_v2 \
        --set rag_monitor.worker_priority=$prio --json "/tmp/ab_${prio}_$i.json"
  done; done
  mkdir -p "$OUT/worker_priority_idle_process"
  for i in 1 2 3; do for prio in idle idle_process; do
    $FRV bench --sections replay --pipelines flow_only parallel --frames 300 --checkpoint models/reach_v2 \
        --set rag_monitor.worker_priority=$prio --json "$OUT/worker_priority_idle_process/ab_${prio}_$i.json"
  done; done
  # one vs two intra-op threads in the vision and policy nodes, alternated (docs/results/node_threads_ab)
  mkdir -p "$OUT/node_threads_ab"
  for i in 1 2; do for t in 1 2; do
    $FRV bench --sections replay --pipelines flow_only parallel --frames 300 --checkpoint models/reach_v2 \
        --set vision_encoder.threads=$t --set flow_policy.threads=$t --json "$OUT/node_threads_ab/thr${t}_$i.json"
  done; done
  # 10 vs 5 sampler steps, same architecture (reach_v2 vs vla_v3), alternated (docs/results/sampler_steps)
  L="$OUT/sampler_steps/latency_ab"; mkdir -p "$L"
  for r in 1 2 3; do for m in reach_v2 vla_v3; do
    $FRV bench --checkpoint models/$m --sections backends --backends onnxruntime onnxruntime-int8 --iters 300 \
        --json "$L/backends_${m}_$r.json"
  done; done
  for r in 1 2; do for m in reach_v2 vla_v3; do
    $FRV bench --checkpoint models/$m --sections replay --pipelines flow_only parallel --frames 300 \
        --json "$L/replay_${m}_$r.json"
  done; done
  for r in 1 2; do for m in reach_v2 vla_v3; do
    $FRV bench --checkpoint models/$m --sections backends --backends torch onnxruntime --iters 300 \
        --json "$L/torch_vs_ort_${m}_$r.json"
  done; done ;;
*) echo "usage: $0 [data|train|results|bench]" >&2; exit 2 ;;
esac
