"""Does the demo model make music, and does its conditioning work? Measured, not listened to.

    # 1. samples: N songs per (artist, genre) class, all three levels, one batch per class
    python bench/evaluate_demo.py generate --model demo --out SAMPLES --per-class 8 [--device cuda]
    # 2. compare them with held-out corpus audio and with white noise; train a classifier on corpus
    #    audio and ask it which class each sample is
    python bench/evaluate_demo.py evaluate --samples SAMPLES --corpus CORPUS --json results.json \
        [--spectrogram docs/demo-spectrogram.png]

Features (engine/training/evaluate.py): spectral flatness, chroma concentration, pitch salience, onset
regularity. "Near the corpus, far from noise" is reported per feature as the distance of the
samples' mean from the corpus mean and from the noise mean, in units of the corpus's spread.
The classifier is a multinomial logistic regression on log-mel statistics, trained on the corpus's
training split (10 s excerpts of the chosen classes) and checked on its held-out split first.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from engine.training.evaluate import FEATURES, LogisticRegression, features, mel_stats, summarise  # noqa: E402

DEFAULT_CLASSES = ("bach:chorale", "traditional:fiddle tune")


def _slug(s: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in s.lower()).strip("-")


def generate(a: argparse.Namespace) -> int:
    import soundfile as sf
    import torch

    from engine.sampling.noise import NoiseKey
    from engine.sampling.pipeline import Engine, SongRequest, WindowLabels
    from engine.sampling.sample import SamplingSettings, run_plan

    torch.set_num_threads(a.threads)
    dev = torch.device(a.device)
    engine = Engine.load(a.model, device=dev, progress=False)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    # The defaults `jukebot generate` uses too: the model's recommendation (its sampling.json).
    temps = tuple(a.temperatures) if a.temperatures else engine.sampling.temperatures
    settings = SamplingSettings(temperatures=temps, max_batch_size=a.per_class)  # type: ignore[arg-type]
    meta: dict[str, Any] = {
        "model": a.model,
        "seconds": a.seconds,
        "classes": {},
        "device": str(dev),
        "temperatures": list(temps),
    }
    for ci, cls in enumerate(a.classes):
        artist, genre = cls.split(":", 1)
        req = SongRequest(artist=artist, genre=genre, seconds=a.seconds, seed=a.seed + ci, settings=settings)
        length = engine.sample_length(a.seconds)
        labels = WindowLabels(engine, req, length, a.per_class)
        plan = engine.plan((2, 1, 0), a.per_class, length, NoiseKey(req.seed, 0), settings)
        t0 = time.monotonic()
        codes = run_plan(
            plan,
            engine.prior,
            labels,
            [np.zeros((a.per_class, 0), np.int64)] * 3,
            device=dev,
            dtype=engine.dtype,
        )
        audio = engine.decode(codes[0], 0)
        took = time.monotonic() - t0
        files = []
        for i, x in enumerate(audio):
            f = out / f"{_slug(artist)}_{_slug(genre)}_{i:02d}.wav"
            sf.write(f, x, engine.sample_rate, subtype="PCM_16")
            files.append(f.name)
        meta["classes"][cls] = {"files": files, "seconds_to_make": round(took, 1)}
        print(f"{cls}: {len(files)} songs in {took:.1f} s", file=sys.stderr, flush=True)
    (out / "samples.json").write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
    return 0


def _read_corpus(corpus: Path) -> list[dict[str, str]]:
    with open(corpus / "labels.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _load(path: Path, sr: int) -> np.ndarray:
    import soundfile as sf

    x, rate = sf.read(str(path), dtype="float32", always_2d=True)
    x = x.mean(axis=1)
    if rate != sr:
        from scipy.signal import resample_poly

        g = np.gcd(rate, sr)
        x = resample_poly(x, sr // g, rate // g).astype(np.float32)
    return x


def _excerpts(x: np.ndarray, sr: int, seconds: float, most: int) -> list[np.ndarray]:
    n = int(seconds * sr)
    return [x[i : i + n] for i in range(0, len(x) - n + 1, n)][:most]


def evaluate(a: argparse.Namespace) -> int:
    samples_dir, corpus = Path(a.samples), Path(a.corpus)
    meta = json.loads((samples_dir / "samples.json").read_text(encoding="utf-8"))
    sr, seconds = a.sample_rate, float(meta["seconds"])
    classes = list(meta["classes"])
    gen: dict[str, list[np.ndarray]] = {
        c: [_load(samples_dir / f, sr) for f in meta["classes"][c]["files"]] for c in classes
    }
    rows = _read_corpus(corpus)

    def clips_of(split: str, cls: str | None, most_per_file: int) -> list[np.ndarray]:
        out: list[np.ndarray] = []
        for r in rows:
            if r.get("split", "train") != split:
                continue
            if cls is not None and f"{r['artist']}:{r['genre']}" != cls:
                continue
            out += _excerpts(_load(corpus / r["file"], sr), sr, seconds, most_per_file)
        return out

    rng = np.random.default_rng(0)
    held_out = clips_of("test", None, 1)
    noise = [
        (0.1 * rng.standard_normal(int(seconds * sr))).astype(np.float32)
        for _ in range(max(8, len(held_out) // 4))
    ]
    all_gen = [x for c in classes for x in gen[c]]
    t0 = time.monotonic()
    stats = {
        name: summarise([features(x, sr) for x in group])
        for name, group in (("samples", all_gen), ("corpus_held_out", held_out), ("white_noise", noise))
    }
    distances = {}
    for f in FEATURES:
        spread = stats["corpus_held_out"][f][1] or 1e-9
        m = stats["samples"][f][0]
        distances[f] = {
            "to_corpus": abs(m - stats["corpus_held_out"][f][0]) / spread,
            "to_noise": abs(m - stats["white_noise"][f][0]) / spread,
        }
    near = sum(d["to_corpus"] < d["to_noise"] for d in distances.values())

    # Conditioning: a classifier trained on corpus audio of the chosen classes, (1) as it is and
    # (2) passed through the model's own VQ-VAE (encode, decode level 0), so that its training audio
    # carries the same codec artifacts as the samples and only the music differs.
    codec = _codec(meta["model"]) if a.codec else None
    train_clips = {c: clips_of("train", c, 1) for c in classes}
    test_clips = {c: clips_of("test", c, 1) for c in classes}
    gx = np.array([mel_stats(x, sr) for c in classes for x in gen[c]])
    gy = np.array([c for c in classes for _ in gen[c]])
    classifiers: dict[str, Any] = {}
    for name, fn in (("corpus audio", None), ("corpus audio through the model's VQ-VAE", codec)):
        if name != "corpus audio" and fn is None:
            continue
        tx = np.array([mel_stats(fn(x) if fn else x, sr) for c in classes for x in train_clips[c]])
        ty = [c for c in classes for _ in train_clips[c]]
        vx = np.array([mel_stats(fn(x) if fn else x, sr) for c in classes for x in test_clips[c]])
        vy = np.array([c for c in classes for _ in test_clips[c]])
        clf = LogisticRegression().fit(tx, ty)
        pred = clf.predict(gx)
        classifiers[name] = {
            "train_clips": len(ty),
            "corpus_held_out_clips": len(vy),
            "corpus_held_out_accuracy": float(np.mean(clf.predict(vx) == vy)) if len(vy) else float("nan"),
            "samples": len(gy),
            "samples_accuracy": float(np.mean(pred == gy)),
            "p_value_vs_chance": _binomial_p(int(np.sum(pred == gy)), len(gy), 1.0 / len(classes)),
            "confusion": {c: {p: int(np.sum((gy == c) & (pred == p))) for p in classes} for c in classes},
        }
    res = {
        "model": meta["model"],
        "seconds": seconds,
        "classes": classes,
        "temperatures": meta.get("temperatures"),
        "n_samples": len(all_gen),
        "n_corpus_held_out": len(held_out),
        "n_noise": len(noise),
        "features": stats,
        "distance_in_corpus_spreads": distances,
        "features_nearer_corpus_than_noise": f"{near} of {len(FEATURES)}",
        "chance": 1.0 / len(classes),
        "classifiers": classifiers,
        "seconds_to_evaluate": round(time.monotonic() - t0, 1),
    }
    text = json.dumps(res, indent=1)
    print(text)
    if a.json:
        Path(a.json).write_text(text + "\n", encoding="utf-8")
    if a.spectrogram:
        first = classes[0]
        spectrogram_png(
            gen[first][0], sr, Path(a.spectrogram), f"demo model: {first} (10 s, all three levels)"
        )
    return 0


def _codec(model: str) -> Any:
    """audio -> the same audio encoded and decoded at level 0 by the model's VQ-VAE."""
    import torch

    from engine.sampling.pipeline import Engine

    engine = Engine.load(model, device="cpu", progress=False)
    top = engine.hop_lengths[-1]

    def run(x: np.ndarray) -> np.ndarray:
        n = len(x) // top * top
        with torch.inference_mode():
            z = engine.model.vqvae.encode(torch.from_numpy(np.ascontiguousarray(x[:n]))[None], 0, 1)
            return engine.model.vqvae.decode([z[0]], 0, 1)[0].numpy()

    return run


def _binomial_p(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p): how likely this many right answers are by chance."""
    from math import comb

    return float(sum(comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k, n + 1)))


def spectrogram_png(x: np.ndarray, sr: int, path: Path, title: str) -> None:
    """A small log-magnitude spectrogram (matplotlib), 0-8 kHz."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from engine.training.evaluate import stft_power

    n_fft, hop = 1024, 256
    p = stft_power(x, n_fft, hop)
    freqs = np.fft.rfftfreq(n_fft, 1 / sr)
    keep = freqs <= 8000
    db = 10 * np.log10(p[:, keep].T + 1e-10)
    fig, ax = plt.subplots(figsize=(6.4, 2.6), dpi=90)
    ax.imshow(
        db,
        origin="lower",
        aspect="auto",
        cmap="magma",
        vmin=db.max() - 80,
        vmax=db.max(),
        extent=(0, len(x) / sr, 0, 8),
    )
    ax.set_xlabel("seconds")
    ax.set_ylabel("kHz")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("generate", help="make songs of each class with the model (all three levels)")
    g.add_argument("--model", default="demo", help="model name or folder (default: demo)")
    g.add_argument("--out", required=True, help="folder for the WAV files and samples.json")
    g.add_argument("--per-class", type=int, default=6, help="songs per class, sampled in one batch")
    g.add_argument(
        "--classes",
        nargs="+",
        default=list(DEFAULT_CLASSES),
        help="artist:genre pairs (default: %(default)s)",
    )
    g.add_argument("--seconds", type=float, default=10.0, help="length of each song")
    g.add_argument("--seed", type=int, default=1, help="seed of the first class (+1 per class)")
    g.add_argument("--device", default="cpu", help="cpu | cuda")
    g.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads (default 1, as jukebot generate)"
    )
    g.add_argument(
        "--temperatures",
        type=float,
        nargs=3,
        metavar=("L0", "L1", "L2"),
        help="sampling temperature per level (default: the model's sampling.json)",
    )
    e = sub.add_parser("evaluate", help="features vs corpus and noise; conditioning classifiers")
    e.add_argument("--samples", required=True, help="the --out folder of `generate`")
    e.add_argument("--corpus", required=True, help="a built corpus (jukebot corpus build)")
    e.add_argument("--sample-rate", type=int, default=22050, help="rate the audio is compared at")
    e.add_argument("--json", help="write the results here too")
    e.add_argument("--spectrogram", help="write a spectrogram PNG of the first sample here")
    e.add_argument(
        "--no-codec",
        dest="codec",
        action="store_false",
        help="skip the classifier trained on corpus audio passed through the model's VQ-VAE",
    )
    a = ap.parse_args()
    return generate(a) if a.cmd == "generate" else evaluate(a)


if __name__ == "__main__":
    raise SystemExit(main())
