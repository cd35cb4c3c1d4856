"""Packing a built corpus as small OGG files in one tar, for the GPU machine."""

from __future__ import annotations

import csv
import io
import json
import tarfile
from pathlib import Path
from typing import Any

from engine.training.scores import write_ogg
from engine.training.sources import LABEL_COLUMNS, CorpusError

# ---------------------------------------------------------------------------------------------
# Packing for the GPU machine.


def pack_corpus(corpus_dir: str | Path, tar_path: str | Path, *, quality: float = 0.0) -> dict[str, Any]:
    """Write ``corpus_dir`` as an uncompressed tar of OGG Vorbis clips (``corpus/`` inside).

    ``quality`` is Vorbis quality in [0, 1]: 0.0 is about 28 kbit/s for 22.05 kHz mono, 0.1 about 31
    (the spectrum keeps its shape; 3 hours fit in about 37 MiB at 0.0). The tar
    holds ``corpus/labels.csv`` (file names changed to ``.ogg``), ``corpus/corpus.json`` and
    ``corpus/audio/...``; soundfile reads the clips on any machine, no ffmpeg needed. Returns
    the tar's size in bytes and the number of clips.
    """
    import soundfile as sf

    if not 0.0 <= quality <= 1.0:
        raise CorpusError(f"Vorbis quality must be between 0 and 1, not {quality}")
    src = Path(corpus_dir)
    if not (src / "labels.csv").is_file():
        raise CorpusError(f"{src} is not a built corpus (no labels.csv): run jukebot corpus build first")
    tar_path = Path(tar_path)
    tar_path.parent.mkdir(parents=True, exist_ok=True)
    with (src / "labels.csv").open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    tmp = tar_path.with_suffix(".tmp")
    with tarfile.open(tmp, "w") as tar:
        for row in rows:
            audio, rate = sf.read(str(src / row["file"]), dtype="float32")
            buf = io.BytesIO()
            write_ogg(buf, audio, rate, quality)
            row["file"] = str(Path(row["file"]).with_suffix(".ogg").as_posix())
            _add_bytes(tar, f"corpus/{row['file']}", buf.getvalue())
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=LABEL_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        _add_bytes(tar, "corpus/labels.csv", text.getvalue().encode())
        meta = json.loads((src / "corpus.json").read_text(encoding="utf-8"))
        meta["packed"] = {"audio_format": "ogg", "vorbis_quality": quality}
        _add_bytes(tar, "corpus/corpus.json", json.dumps(meta, indent=1, ensure_ascii=False).encode())
    tmp.replace(tar_path)
    return {"bytes": tar_path.stat().st_size, "clips": len(rows)}


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))
