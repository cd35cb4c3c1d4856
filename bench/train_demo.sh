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
set -uo pipefail
OUT=${OUT:-$PWD/out/demo-run}
VQVAE_MIN=${VQVAE_MIN:-3.6}
TOTAL_MIN=${TOTAL_MIN:-9.1}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
t0=$(date +%s)

if ! python3 -c "import soundfile, unidecode, rapidfuzz" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    .whl/*.whl .whl-train/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null || true

DATA=/tmp/corpus-data
rm -rf "$DATA" && mkdir -p "$DATA"
if [[ -f "${CORPUS_TAR:-.corpus/corpus.tar}" ]]; then
  tar -xf "${CORPUS_TAR:-.corpus/corpus.tar}" -C "$DATA" || exit 1
  echo "corpus: $(($(wc -l < "$DATA/corpus/labels.csv") - 1)) clips, unpacked after $(( $(date +%s) - t0 )) s"
elif [[ -z "${CONTINUE_FROM:-}" ]]; then
  echo "no corpus tar" && exit 1
fi
DATA=$DATA/corpus  # a continued run trains on the carried codes (encoded from this path)

RUN=/tmp/demo-run
rm -rf "$RUN" && mkdir -p "$RUN/train"
LEFT=$(python3 -c "print(round($TOTAL_MIN - ($(date +%s) - $t0) / 60, 2))")
ARGS=(--data "$DATA" --out "$RUN" --total-minutes "$LEFT" --vqvae-batch "${VQVAE_BATCH:-32}"
      --prior-batch "${PRIOR_BATCH:-32}")
[[ -n "${STEPS:-}" ]] && ARGS+=(--steps "$STEPS")
status=0
if [[ -n "${CONTINUE_FROM:-}" ]]; then
  cp "$CONTINUE_FROM"/model.json "$CONTINUE_FROM"/*.pth.tar "$RUN"/
  cat "$CONTINUE_FROM"/codes.pt.gz.* | gunzip > "$RUN/train/codes.pt"
  python3 bench/train_demo.py all "${ARGS[@]}" --skip-vqvae --prior-minutes 99 --continue-run \
    --priors "${PRIORS:-2,1,0}" || status=$?
else
  python3 bench/train_demo.py all "${ARGS[@]}" --vqvae-minutes "$VQVAE_MIN" --prior-minutes 99 || status=$?
fi

# What comes back: the fp32 model files (one per part, each under 16 MiB), the codes (to train on
# without the audio), and model.json, the logs and the loss curves in one tar.
PARTS="vqvae prior_level_0 prior_level_1 prior_level_2"
[[ -n "${CONTINUE_FROM:-}" ]] && PARTS=$(for l in ${PRIORS//,/ }; do echo -n "prior_level_$l "; done)
for p in $PARTS; do
  [[ -f "$RUN/$p.pth.tar" ]] && cp "$RUN/$p.pth.tar" "$OUT/"
  # the weights with the lowest held-out loss (priors)
  [[ -f "$RUN/train/$p/best.pth.tar" ]] && cp "$RUN/train/$p/best.pth.tar" "$OUT/$p.best.pth.tar"
done
if [[ -f "$RUN/train/codes.pt" && -z "${CONTINUE_FROM:-}" ]]; then
  gzip -1 -c "$RUN/train/codes.pt" | split -b 15M -d -a 1 - "$OUT/codes.pt.gz."
fi
tar -cf "$OUT/logs.tar" --exclude=state.pt --exclude=codes.pt --exclude=best.pth.tar -C "$RUN" model.json train
ls -la "$OUT"
echo "total $(( $(date +%s) - t0 )) s, status $status"
exit $status
