"""Files that other processes read while we write them.

Mosquitto may reload its password file at any moment; a platform restarting reads the tariffs
the API wrote a moment ago, an edge gateway its next bdSeq, an audit check its anchored head.
Each must see the old file or the new one, never half of one: ``atomic_write`` writes beside
the file, syncs, and renames over it.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

__all__ = ["atomic_write"]


def atomic_write(path: Path, data: bytes, *, mode: int = 0o644) -> None:
    """Replace ``path`` with ``data`` in one step, the file never readable beyond ``mode``.

    Blocking: call it from a thread in async code.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    # A scratch file of its own (0600 until written): writers in several processes or threads
    # (an identifier node's workers anchoring one audit trail) never share one.
    fd, scratch = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fchmod(handle.fileno(), mode)
            os.fsync(handle.fileno())
        os.replace(scratch, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(scratch)
        raise
