"""Files the project writes and reads back whole: ``atomic_write`` so that readers see the old
content or the new, never a mix (run plans and results, the home's PRODUCTION pointer and policy,
manifests, exports), and ``read_json`` with one-line errors naming the file."""
from __future__ import annotations

import json
import os
import uuid
from pathlib import Path


def atomic_write(path: str | Path, content: str | bytes, sync: bool = False) -> Path:
    """Write ``content`` to a hidden file beside ``path`` (its folder made), then rename it over
    ``path``. ``sync`` flushes it to disk first, where a crash must not leave a renamed file whose
    bytes are not there yet (the PRODUCTION pointer, crops). A failed write leaves no partial file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.partial")
    data = content.encode("utf-8") if isinstance(content, str) else content
    try:
        with open(partial, "xb") as handle:
            handle.write(data)
            if sync:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return path


def read_json(path: str | Path, missing: str):
    """The JSON value in ``path``. Raises ``FileNotFoundError(missing)`` when there is no such file,
    ``ValueError`` naming the file when it is not JSON."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(missing)
    try:
        return json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} is not JSON: {exc}") from None
