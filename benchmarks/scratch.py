"""A benchmark's scratch folder: removed when the run ends, kept and named when it fails.

The sidecar benchmarks write a ledger of up to half a gigabyte each run; left in /tmp, a few
dozen runs fill a disk (CI once failed for want of space to install vLLM). A failed run keeps
its folder, logs included, and says where it is.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def scratch_dir(prefix: str) -> Iterator[Path]:
    """A fresh folder under the system's temp dir; gone after a clean exit, kept after an error."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    except BaseException:
        print(f"scratch folder kept for a look: {path}", file=sys.stderr, flush=True)
        raise
    shutil.rmtree(path, ignore_errors=True)
