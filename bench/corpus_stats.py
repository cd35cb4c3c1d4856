"""Corpus figures and data-loading speed.

    .venv/bin/python bench/corpus_stats.py /work/corpus [--sample-length 65536] [--batches 50]

Prints what ``corpus.json`` says (hours, clips per artist and genre, build time), then loads the
folder with ``engine.training.dataset.AudioDataset`` and times the load (decode + resample of every clip) and
the crops per second a single-process DataLoader delivers, so a trainer knows whether data loading
can keep up with a GPU.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("corpus", type=Path)
    parser.add_argument("--sample-rate", type=int, default=22050)
    parser.add_argument("--sample-length", type=int, default=65536)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--batches", type=int, default=50)
    args = parser.parse_args()

    meta_path = args.corpus / "corpus.json"
    if meta_path.is_file():
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        print(
            f"corpus: {meta['clips']} clips, {meta['pieces']} pieces, {meta['hours']:.2f} h, built in {meta['build_seconds']} s"
        )
        for key in ("artists", "genres"):
            print(f"  {key}: " + ", ".join(f"{k} {v['seconds'] / 60:.1f} min" for k, v in meta[key].items()))
        lyr = sum(1 for p in meta["pieces_used"] if p["lyrics"])
        print(f"  pieces with lyrics: {lyr}; skipped: {len(meta['skipped'])}")
        print(f"  versions: {json.dumps({k: v for k, v in meta['versions'].items() if k != 'soundfont'})}")

    import torch
    from torch.utils.data import DataLoader

    from engine.training.dataset import AudioDataset, CropSampler

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    ds = AudioDataset(args.corpus, sample_rate=args.sample_rate, sample_length=args.sample_length, split=None)
    load = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"dataset: {len(ds.files)} files, {ds.seconds / 3600:.2f} h loaded in {load:.1f} s, peak RSS {rss:.0f} MiB"
    )
    loader = DataLoader(
        ds, batch_size=args.batch_size, sampler=CropSampler(num_samples=args.batch_size * args.batches)
    )
    t0 = time.perf_counter()
    n = 0
    for batch in loader:
        n += batch["audio"].shape[0]
    dt = time.perf_counter() - t0
    print(
        f"crops: {n} of {args.sample_length} samples in {dt:.2f} s = {n / dt:.0f} crops/s "
        f"({n * args.sample_length / args.sample_rate / dt:.0f} s of audio per second), one process"
    )


if __name__ == "__main__":
    main()
