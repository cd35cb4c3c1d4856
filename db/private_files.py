"""jukebot's files are its user's alone: the data folder 0700; the database, its WAL/SHM, the token
key and stored audio 0600. Other accounts on the machine read nothing (members' names, lyrics, logins).
`loose_modes` finds what `jukebot doctor` warns about."""

from __future__ import annotations

import contextlib
import stat
from pathlib import Path

FOLDER_MODE = 0o700
FILE_MODE = 0o600


def private_folder(folder: Path) -> Path:
    """Create `folder` (and parents) as 0700; a folder that exists keeps its mode (doctor warns)."""
    if not folder.is_dir():  # a file in the way raises, as plain mkdir would
        folder.mkdir(parents=True, exist_ok=True, mode=FOLDER_MODE)
        with contextlib.suppress(OSError):
            folder.chmod(FOLDER_MODE)  # mkdir's mode is filtered by the umask
    return folder


def private_file(path: Path) -> None:
    """Make an existing file 0600 (the owner alone reads and writes it)."""
    with contextlib.suppress(FileNotFoundError):
        if stat.S_IMODE(path.stat().st_mode) & 0o077:
            path.chmod(FILE_MODE)


def loose_modes(paths: list[Path]) -> list[str]:
    """'path (mode)' for each existing path that other users may read or enter."""
    loose = []
    for path in paths:
        try:
            mode = stat.S_IMODE(path.stat().st_mode)
        except OSError:
            continue
        if mode & 0o077:
            loose.append(f"{path} ({mode:o})")
    return loose
