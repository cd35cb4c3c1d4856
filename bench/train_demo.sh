#!/usr/bin/env bash
# Train the demo model on the lent GPU machine (one 10-minute slot), from the repository root:
#   OUT=/some/dir bash bench/train_demo.sh
# Needs .corpus/corpus.tar (jukebot corpus build, then jukebot corpus pack) and, on a machine
# without them, wheels in .whl/ and .whl-train/ (soundfile, cffi, pycparser, unidecode, rapidfuzz,
# typer: training runs as `python -m engine.cli train`, the same command as `jukebot train`).
# Environment: VQVAE_MIN (VQ-VAE budget), TOTAL_MIN (whole run; the priors get what is left),
# VQVAE_BATCH, PRIOR_BATCH, STEPS (fixed steps per stage instead of budgets: smoke tests),
# CONTINUE_FROM=DIR (a folder with model.json, the .pth.tar files and codes.pt.gz.*: train the
# priors in PRIORS (e.g. 2,0) further from the weights there, or from scratch where a level has
# none; the VQ-VAE stays; no corpus needed).
# A VQ-VAE over several calls (docs/DEMO.md "Retraining plan"):
#   VQVAE_ONLY=1 VQVAE_STEPS=N: only the VQ-VAE, toward N steps in all, for what is left of
#     TOTAL_MIN; returns its whole training state (vqvae.state.pt.gz.*), vqvae.pth.tar, the held-out
#     figures (vqvae_heldout.json) and logs.tar. RESUME_VQVAE=DIR (what such a call returned): carry
#     on exactly where it stopped. VQVAE_STOP_AFTER=K stops at step K (tests); VQVAE_SAMPLE_SECONDS
#     sets the crop length.
#   PRIORS_FROM_VQVAE=DIR (a folder with model.json and the final vqvae.pth.tar, e.g. the last
#     VQVAE_ONLY call's): encode the corpus with that VQ-VAE and train the priors against it.
#   VQVAE_WIDTH, VQVAE_DEPTH: the VQ-VAE's size in a new config (default 32 and 4, the shipped demo's).
# WORK (default /tmp) holds the unpacked corpus and the run folder.
set -uo pipefail
OUT=${OUT:-$PWD/out/demo-run}
VQVAE_MIN=${VQVAE_MIN:-3.6}
TOTAL_MIN=${TOTAL_MIN:-9.1}
WORK=${WORK:-/tmp}
SIZE=()
[[ -n "${VQVAE_WIDTH:-}" ]] && SIZE+=(--vqvae-width "$VQVAE_WIDTH")
[[ -n "${VQVAE_DEPTH:-}" ]] && SIZE+=(--vqvae-depth "$VQVAE_DEPTH")
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1

put_model() {  # $1 a model file, $2 its name under $OUT: split in 15 MiB parts (.0, .1, ...) if larger
  if (( $(stat -c %s "$1") > 15 * 1024 * 1024 )); then split -b 15M -d -a 1 "$1" "$OUT/$2."
  else cp "$1" "$OUT/$2"; fi
}
get_model() {  # $1 a folder a call returned, $2 the file's name there, $3 where to put it whole
  if [[ -f "$1/$2" ]]; then cp "$1/$2" "$3"; elif [[ -f "$1/$2.0" ]]; then cat "$1/$2".? > "$3"; else return 1; fi
}
finish() {  # list what comes back; the device tool returns at most 8 files of at most 16 MiB each
  ls -la "$OUT"
  local n big
  n=$(find "$OUT" -type f | wc -l)
  big=$(find "$OUT" -type f -size +16M -printf '%f ')
  (( n > 8 )) && echo "WARNING: $n files under \$OUT: only 8 come back"
  [[ -n "$big" ]] && echo "WARNING: over 16 MiB, will not come back: $big"
  echo "total $(( $(date +%s) - t0 )) s, status $status"
  exit "$status"
}
t0=$(date +%s)

if ! python3 -c "import soundfile, unidecode, rapidfuzz" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    .whl/*.whl .whl-train/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null || true

DATA=$WORK/corpus-data
rm -rf "$DATA" && mkdir -p "$DATA"
if [[ -f "${CORPUS_TAR:-.corpus/corpus.tar}" ]]; then
  tar -xf "${CORPUS_TAR:-.corpus/corpus.tar}" -C "$DATA" || exit 1
  echo "corpus: $(($(wc -l < "$DATA/corpus/labels.csv") - 1)) clips, unpacked after $(( $(date +%s) - t0 )) s"
elif [[ -z "${CONTINUE_FROM:-}" ]]; then
  echo "no corpus tar" && exit 1
fi
DATA=$DATA/corpus  # a continued run trains on the carried codes (encoded from this path)

RUN=$WORK/demo-run
rm -rf "$RUN" && mkdir -p "$RUN/train"
LEFT=$(python3 -c "print(round($TOTAL_MIN - ($(date +%s) - $t0) / 60, 2))")
ARGS=(--data "$DATA" --out "$RUN" --total-minutes "$LEFT" --vqvae-batch "${VQVAE_BATCH:-32}"
      --prior-batch "${PRIOR_BATCH:-32}")
[[ -n "${STEPS:-}" ]] && ARGS+=(--steps "$STEPS")
status=0
if [[ -n "${VQVAE_ONLY:-}" ]]; then
  if [[ -n "${RESUME_VQVAE:-}" ]]; then  # the run folder as the last call left it
    mkdir -p "$RUN/train/vqvae" && tar -xf "$RESUME_VQVAE/logs.tar" -C "$RUN" || exit 1
    cat "$RESUME_VQVAE"/vqvae.state.pt.gz.* | gunzip > "$RUN/train/vqvae/state.pt" || exit 1
    get_model "$RESUME_VQVAE" vqvae.pth.tar "$RUN/vqvae.pth.tar"  # (remade at the next save anyway)
  fi
  # Leave time for the held-out figures and the packing after the last step.
  VQ_LEFT=$(python3 -c "print(round($LEFT - ${VQVAE_RESERVE_MIN:-0.8}, 2))")
  VQ_ARGS=(--data "$DATA" --out "$RUN" --steps "${VQVAE_STEPS:?VQVAE_ONLY needs VQVAE_STEPS, the total}"
           --minutes "$VQ_LEFT" --batch "${VQVAE_BATCH:-32}" "${SIZE[@]}")
  [[ -n "${VQVAE_STOP_AFTER:-}" ]] && VQ_ARGS+=(--stop-after "$VQVAE_STOP_AFTER")
  [[ -n "${VQVAE_SAMPLE_SECONDS:-}" ]] && VQ_ARGS+=(--sample-seconds "$VQVAE_SAMPLE_SECONDS")
  python3 bench/train_demo.py vqvae "${VQ_ARGS[@]}" || status=$?
  # What comes back: everything the next call needs to carry on (each file under 16 MiB).
  if [[ -f "$RUN/train/vqvae/state.pt" ]]; then
    gzip -1 -c "$RUN/train/vqvae/state.pt" | split -b 15M -d -a 1 - "$OUT/vqvae.state.pt.gz."
  fi
  [[ -f "$RUN/vqvae.pth.tar" ]] && put_model "$RUN/vqvae.pth.tar" vqvae.pth.tar
  [[ -f "$RUN/train/vqvae/heldout.json" ]] && cp "$RUN/train/vqvae/heldout.json" "$OUT/vqvae_heldout.json"
  tar -cf "$OUT/logs.tar" --exclude=state.pt -C "$RUN" model.json manifest.json train
  finish
elif [[ -n "${PRIORS_FROM_VQVAE:-}" ]]; then  # the final VQ-VAE: encode the corpus, train the priors
  get_model "$PRIORS_FROM_VQVAE" vqvae.pth.tar "$RUN/vqvae.pth.tar" || exit 1
  if [[ -f "$PRIORS_FROM_VQVAE/model.json" ]]; then cp "$PRIORS_FROM_VQVAE/model.json" "$RUN/"
  else tar -xf "$PRIORS_FROM_VQVAE/logs.tar" -C "$RUN" model.json || exit 1; fi  # a VQVAE_ONLY call's
  python3 bench/train_demo.py all "${ARGS[@]}" --skip-vqvae --prior-minutes 99 --priors "${PRIORS:-2,1,0}" \
    || status=$?
elif [[ -n "${CONTINUE_FROM:-}" ]]; then
  cp "$CONTINUE_FROM"/model.json "$CONTINUE_FROM"/*.pth.tar "$RUN"/
  cat "$CONTINUE_FROM"/codes.pt.gz.* | gunzip > "$RUN/train/codes.pt"
  python3 bench/train_demo.py all "${ARGS[@]}" --skip-vqvae --prior-minutes 99 --continue-run \
    --priors "${PRIORS:-2,1,0}" || status=$?
else
  python3 bench/train_demo.py all "${ARGS[@]}" "${SIZE[@]}" --vqvae-minutes "$VQVAE_MIN" --prior-minutes 99 \
    || status=$?
fi

# What comes back: the fp32 model files (one per part, each under 16 MiB), the codes (to train on
# without the audio), and model.json, the logs and the loss curves in one tar.
PARTS="vqvae prior_level_0 prior_level_1 prior_level_2"
# (the VQ-VAE of PRIORS_FROM_VQVAE is what went in: not sent back)
[[ -n "${CONTINUE_FROM:-}${PRIORS_FROM_VQVAE:-}" ]] &&
  PARTS=$(P=${PRIORS:-2,1,0}; for l in ${P//,/ }; do echo -n "prior_level_$l "; done)
for p in $PARTS; do
  [[ -f "$RUN/$p.pth.tar" ]] && cp "$RUN/$p.pth.tar" "$OUT/"
  # the weights with the lowest held-out loss (priors)
  [[ -f "$RUN/train/$p/best.pth.tar" ]] && cp "$RUN/train/$p/best.pth.tar" "$OUT/$p.best.pth.tar"
done
if [[ -f "$RUN/train/codes.pt" && -z "${CONTINUE_FROM:-}" ]]; then
  gzip -1 -c "$RUN/train/codes.pt" | split -b 15M -d -a 1 - "$OUT/codes.pt.gz."
fi
tar -cf "$OUT/logs.tar" --exclude=state.pt --exclude=codes.pt --exclude=best.pth.tar -C "$RUN" model.json train
finish
