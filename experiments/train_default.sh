#!/usr/bin/env bash
# Trains the bundled default weights and exports them into hdr_jax/weights/.
#
# The configs' 'cpu' variants are the recipe (DrTMO: 6000 steps of batch 8; CF-Net: 1000 steps
# of batch 8 with the MEF-SSIM term, then the 'colour' stage: 300 steps with the chroma term,
# from the first stage's exported weights). On 2 CPU cores that is roughly 3-4 h per DrTMO
# network and 1.5 h per CF-Net. The committed DrTMO weights and the CF-Nets' first stage came from
# these configs on a lent H100, the four runs side by side for 7 minutes (see the manifest's
# 'trained_on'; the CF-Net runs there were stopped at their step-1000 checkpoint, which is what
# num_train_steps now says); the colour stage ran on 2 CPU cores, one network per core. The response classifier
# (configs/response.py: 3000 steps of batch 64, ~10 min on 2 CPU cores) trains last, on the
# DrTMO data. The clip-level estimate (experiments/clip_scalar.py: a scalar-objective network,
# then two metric-objective networks, one from it and one from scratch; the committed ones ran on
# a lent H200 in about 2 minutes each, hours on 2 CPU cores) is exported next, bounded to bend
# inverse sRGB down only. The highlight lift (experiments/fit_level.py: six parameters fitted by
# Powell on tabulated scores of the exported pipeline, ~15 min on one core) comes after it, then
# the lift for photos whose response the user gives (the same fit on the photos linearised with
# their true response, --response true, ~4 min). Last the blind curve choice
# (experiments/fit_choice.py: 6000 views scored under every option with those lifts, a linear
# model fitted in seconds; ~35 min on 2 cores).
#
#   bash experiments/train_default.sh [HDR_DIR] [WORKDIR]
#
# HDR_DIR: folder of HDR panoramas (default ../shared/data/hdri; see
# experiments/fetch_hdri.sh to rebuild the same CC0 set on a fresh machine).
# EMOR_DIR (environment): the EMoR model folder the clip-level estimate and the lift sample their
# responses from (default ../shared/data/crf).
# Each training resumes if interrupted: rerun the same command.
set -euo pipefail
HDR_DIR=${1:-../shared/data/hdri}
WORK=${2:-workdirs/default}
TFDS=$WORK/tfds
run() {  # name config [flags...]
  mkdir -p "$(dirname "$WORK/$1")"
  python -m experiments.train --config "$2" --workdir "$WORK/$1" "${@:3}" \
    --config.data.manual_dir="$HDR_DIR" --config.data.data_dir="$TFDS" --noprogress 2>&1 | tee -a "$WORK/$1.log"
}
run_cfnet() {  # scale: the cpu recipe, exported, then its colour fine-tuning
  run "base_x$1/cfnet_x$1" "experiments/configs/cfnet.py:x$1,cpu"
  python -m experiments.export_weights --workdir "$WORK/base_x$1" --out "$WORK/base_x$1/weights"
  run "cfnet_x$1" "experiments/configs/cfnet.py:x$1,cpu,colour" \
    --config.init_weights="$WORK/base_x$1/weights"
}
mkdir -p "$WORK"
# Build the three datasets first, one at a time (two chains must not build the same one).
for c in drtmo.py:up,cpu cfnet.py:x2,cpu cfnet.py:x4,cpu; do
  python -m experiments.train --prepare_only --config "experiments/configs/$c" \
    --config.data.manual_dir="$HDR_DIR" --config.data.data_dir="$TFDS"
done
if [ "${PARALLEL:-0}" = 1 ]; then
  # Two chains side by side (2 CPU cores: about the same total time, earlier first results).
  # Each chain is pinned to one core: two XLA thread pools sharing two cores slow both ~3x.
  ( taskset -c 0 bash -c "set -euo pipefail; $(declare -f run run_cfnet); WORK=$WORK HDR_DIR=$HDR_DIR TFDS=$TFDS; \
      run drtmo_up experiments/configs/drtmo.py:up,cpu && run_cfnet 2" ) &
  ( taskset -c 1 bash -c "set -euo pipefail; $(declare -f run run_cfnet); WORK=$WORK HDR_DIR=$HDR_DIR TFDS=$TFDS; \
      run drtmo_down experiments/configs/drtmo.py:down,cpu && run_cfnet 4" ) &
  wait
else
  run drtmo_up experiments/configs/drtmo.py:up,cpu
  run drtmo_down experiments/configs/drtmo.py:down,cpu
  run_cfnet 2
  run_cfnet 4
fi
run response experiments/configs/response.py
python -m experiments.export_weights --workdir "$WORK" --out hdr_jax/weights
CLIP="python -m experiments.clip_scalar --hdr_dir $HDR_DIR --emor_dir ${EMOR_DIR:-../shared/data/crf}"
$CLIP --mode train --objective scalar --views 105066 --steps 6000 --workdir "$WORK/clip_scalar"
$CLIP --mode train --objective metric --views 56940 --init "$WORK/clip_scalar" \
  --learning_rate 1e-4 --workdir "$WORK/clip_warm"
$CLIP --mode train --objective metric --views 56940 --workdir "$WORK/clip_scratch"
$CLIP --mode export --estimators "$WORK/clip_warm,$WORK/clip_scratch" --ceiling 0 --offset 0.1 \
  --out hdr_jax/weights
python -m experiments.fit_level --hdr_dir "$HDR_DIR" --emor_dir "${EMOR_DIR:-../shared/data/crf}" \
  --weights hdr_jax/weights --workdir "$WORK/level" --out hdr_jax/weights
python -m experiments.fit_level --hdr_dir "$HDR_DIR" --emor_dir "${EMOR_DIR:-../shared/data/crf}" \
  --response true --workdir "$WORK/level" --out hdr_jax/weights
python -m experiments.fit_choice --hdr_dir "$HDR_DIR" --emor_dir "${EMOR_DIR:-../shared/data/crf}" \
  --weights hdr_jax/weights --workdir "$WORK/choice" --parts 2 --out hdr_jax/weights
