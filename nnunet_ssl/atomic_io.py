"""Atomic file writes: write to a temporary file in the target folder, then rename it into place.

Readers (and a crash) see the old file or the new one, never half of one. Every file nnunet-ssl
writes that a user or a later step relies on goes through here.
"""
import json
import os
import tempfile
from typing import Callable


def atomic_write(path: str, write: Callable[[str], None]) -> None:
    """Call ``write(tmp_path)`` and move the result to ``path``; on failure nothing is left behind."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=temp_name_prefix(path), suffix=".tmp", dir=folder)
    os.close(fd)
    try:
        write(tmp)
        mode = os.stat(path).st_mode & 0o777 if os.path.isfile(path) else 0o666 & ~_umask()
        os.chmod(tmp, mode)  # mkstemp creates 0600; keep what a normal write would give
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def output_file_problem(path: str) -> str | None:
    """Why ``atomic_write`` could not write the file ``path`` (a folder is there, or a file stands where
    one of its folders would be), or None; commands ask before their work, not after it."""
    if os.path.isdir(path):
        return f"{path} is a folder, not a file"
    folder = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(folder):
        folder = os.path.dirname(folder)
    if not os.path.isdir(folder):
        return f"{folder} is a file, so {path} cannot be written inside it"
    return None


def temp_name_prefix(path: str) -> str:
    """The prefix of ``atomic_write``'s temporary files for ``path`` (they end in ``.tmp``)."""
    return f".{os.path.basename(path)}."


def remove_leftover_temp_files(folder: str) -> list[str]:
    """Remove temporary files a killed ``atomic_write`` left in ``folder``; returns their names.
    Call it only while no other process writes into the folder (under its lock)."""
    if not os.path.isdir(folder):
        return []
    removed = [f for f in sorted(os.listdir(folder)) if f.startswith(".") and f.endswith(".tmp")
               and os.path.isfile(os.path.join(folder, f))]
    for name in removed:
        os.remove(os.path.join(folder, name))
    return removed


def atomic_save_json(obj, path: str, indent: int = 4, sort_keys: bool = False) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=indent, sort_keys=sort_keys)
            f.flush()
            os.fsync(f.fileno())
    atomic_write(path, write)


def atomic_torch_save(obj, path: str) -> None:
    import torch
    atomic_write(path, lambda tmp: torch.save(obj, tmp))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
