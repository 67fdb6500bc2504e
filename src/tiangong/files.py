"""Files that other processes read while we write them.

Mosquitto may reload its password file at any moment; a platform restarting reads the tariffs
the API wrote a moment ago. Each must see the old file or the new one, never half of one:
``atomic_write`` writes beside the file and renames over it.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["atomic_write"]


def atomic_write(path: Path, data: bytes, *, mode: int = 0o644) -> None:
    """Replace ``path`` with ``data`` in one step, the file never readable beyond ``mode``.

    Blocking: call it from a thread in async code.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    tmp.chmod(mode)  # whatever the umask took away or left
    tmp.replace(path)
