"""Finding the checkpoint `--ckpt_path last` means, and telling a readable checkpoint from a
broken one (empty, truncated, corrupted, or not a Lightning checkpoint at all)."""

from __future__ import annotations

import sys
import zipfile
from pathlib import Path

import torch


class NoCheckpoint(Exception):
    """No readable checkpoint below the searched folder; the message is one line."""


def checkpoint_problem(path: Path) -> str | None:
    """Why `path` cannot be loaded as a Lightning checkpoint, or None when it can.

    A checkpoint is a zip archive (torch.save's format): an empty file, a truncated one (its
    central directory, at the end, is missing), a member whose CRC does not match, or an archive
    without a pickled dict holding `state_dict` and `global_step` is refused. The tensors are
    memory-mapped, not read into memory, so checking a large checkpoint is cheap.
    """
    try:
        if path.stat().st_size == 0:
            return "empty file"
        if not zipfile.is_zipfile(path):
            return "not a torch checkpoint (no zip archive: truncated or another format)"
        with zipfile.ZipFile(path) as archive:
            bad_member = archive.testzip()
            if bad_member is not None:
                return f"corrupted member {bad_member}"
        checkpoint = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    except Exception as error:  # anything that stops loading makes it unreadable
        return f"cannot be loaded ({type(error).__name__}: {str(error).splitlines()[0][:200]})"
    if not isinstance(checkpoint, dict) or not {"state_dict", "global_step"} <= checkpoint.keys():
        return "not a Lightning checkpoint (no state_dict and global_step)"
    return None


def newest_readable_checkpoint(root_dir: str | Path) -> Path:
    """The most recently written readable *.ckpt below `root_dir`, in any of the run's version
    folders. Each newer one that cannot be read is skipped with one line on stderr saying why."""
    checkpoints = sorted(
        Path(root_dir).rglob("*.ckpt"), key=lambda path: path.stat().st_mtime, reverse=True
    )
    skipped = 0
    for path in checkpoints:
        problem = checkpoint_problem(path)
        if problem is None:
            return path
        skipped += 1
        print(f"lengen: skipping unreadable checkpoint {path}: {problem}", file=sys.stderr)
    found = f"only {skipped} unreadable checkpoint(s)" if skipped else "no checkpoint (*.ckpt)"
    raise NoCheckpoint(
        f"--ckpt_path last: {found} below {root_dir}; run `lengen fit` with the same "
        "trainer.default_root_dir first, or pass a checkpoint path"
    )
