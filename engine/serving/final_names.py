"""The names of an upsample's finished files: the song's clip is `final.wav`, `final.mp3`,
`codes.npz` (engine.sampling.song); a draft chosen again after the vote (not the song's winner)
writes `draft-<n>-final.wav` etc. beside it."""

from __future__ import annotations

from typing import Any


def finals_prefix(winner_draft_id: int | None, draft_id: int | None, pick: int) -> str:
    """The prefix of the finished files' names when draft `pick` (1-based) is upsampled: none for
    the song's winner (or before any vote), `draft-<pick>-` for a draft chosen again."""
    return "" if winner_draft_id in (None, draft_id) else f"draft-{pick}-"


class PrefixedFinals:
    """A song's files where the finished clip's names carry a prefix (`draft-2-final.wav`): the
    upsample of a draft chosen again after the vote must not overwrite the winner's clip."""

    def __init__(self, files: Any, prefix: str) -> None:
        from engine.sampling.song import ALIGNMENT, CODES, FINAL_LRC, FINAL_MP3, FINAL_WAV

        self.files, self.prefix = files, prefix
        self.reuse_finished = files.reuse_finished
        self._finals = {FINAL_WAV, FINAL_MP3, CODES, FINAL_LRC, ALIGNMENT}

    def _name(self, name: str) -> str:
        return f"{self.prefix}{name}" if name in self._finals else name

    def write(self, name: str, data: bytes) -> None:
        self.files.write(self._name(name), data)

    def read(self, name: str) -> bytes:
        return bytes(self.files.read(self._name(name)))

    def exists(self, name: str) -> bool:
        return bool(self.files.exists(self._name(name)))

    def checkpointer(self, stage: str) -> Any:
        return self.files.checkpointer(stage)
