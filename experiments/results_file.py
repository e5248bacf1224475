"""How every experiment records its result: one JSON with the command that reproduces it, and a
markdown table beside it (``<out>.md``), so the README's tables can be regenerated and checked."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Callable


def command(module: str, argv: list[str] | None) -> str:
    """``python -m experiments.<module> ARGS``: the command line as the user typed it."""
    return f"python -m experiments.{module} " + " ".join(sys.argv[1:] if argv is None else argv)


def save(out: Path, result: dict, markdown: str = "") -> Path:
    """Write ``result`` (which should hold its ``command``) to ``out`` and ``markdown`` to
    ``out`` with the suffix ``.md``; returns ``out``."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    if markdown:
        out.with_suffix(".md").write_text(markdown.rstrip("\n") + "\n")
    return out


def publish(out: Path, result: dict, markdown: str) -> Path:
    """``save``, then show the person who ran the experiment its table and where it was written."""
    out = save(out, result, markdown)
    print(markdown)
    print(f"written: {out} and {out.with_suffix('.md')}")
    return out


def measure_and_publish(module: str, argv: list[str] | None, out: Path, measure: Callable[[], dict],
                        table: Callable[[dict], str]) -> int:
    """An experiment's ``main`` after its arguments: ``measure()``, then ``publish`` the result with its
    command; a missing file or bad data is one ``error:`` line and exit 2, nothing written."""
    try:
        result = measure()
    except (OSError, ValueError, KeyError) as exc:
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    result["command"] = command(module, argv)
    publish(out, result, table(result))
    return 0
