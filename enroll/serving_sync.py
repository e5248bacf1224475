"""Served identify that is never stale: a debounced, gallery-only TF-Serving export of a home.

In a process that changes the gallery (the API):

    from enroll.serving_sync import ServingExporter
    exporter = ServingExporter(home, gallery_version=gallery.gallery_version)  # once, at start-up
    exporter.notify_changed()   # after each committed add / append / remove; returns at once
    exporter.close()            # at shutdown: writes what is pending, stops the thread

``ServingExporter.from_env(home, gallery_version)`` is the same, or None when $FACENET_SERVING_SYNC
is ``off``: set where a watcher owns the export (k8s/enroll runs one, so that the API replicas do
not each write versions). The watcher, from a shell or a Pod of its own, polls instead of being told:

    enroll export-serving --watch [--debounce 2] [--poll 1] [--keep-versions 4] [--heartbeat FILE]

Timing. The first notification after a quiet spell opens a window of ``debounce_s``; every
notification inside it folds into the one export at its end, which reads the gallery as it is then.
A change is therefore served within ``debounce_s`` plus one export (plus the rest of an export
already running), and at most one version is written per window. TF-Serving adds its file-system
poll (``--file_system_poll_wait_seconds``, 1 s by default) and the load of the version. After the
process's first export, versions are gallery-only (serving/gallery_versions.py): the traced network
is reused and its weights hard-linked, only the gallery is written.

Several exporters over one home. Each version records the state it serves, ``model_version``
(PRODUCTION) and ``gallery_version`` (the gallery's change counter, read before its rows). An
exporter whose state equals the newest version's writes nothing, so a watcher and an API told of
the same change write one version, not two. A failed export is retried with a growing delay
(up to a minute) until one succeeds. Old versions are pruned to the newest ``keep_versions``
(TF-Serving's policy in k8s/serving keeps 2 loaded).
"""
from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from enroll import home as layout
from enroll.serving_export import DEFAULT_NAME, export_home

SYNC_ENV = "FACENET_SERVING_SYNC"
MAX_RETRY_S = 60.0


@dataclass(frozen=True)
class ServedState:
    model_version: int | None  # PRODUCTION
    gallery_version: int  # the gallery's change counter (Gallery.gallery_version)


@dataclass(frozen=True)
class ExportRecord:
    """One export the exporter ran (or skipped, the newest version serving this state already)."""

    state: ServedState
    version: int | None  # None when skipped or failed
    seconds: float
    bytes_written: int  # new bytes on disk (a hard-linked network shard is not new)
    gallery_faces: int = 0
    skipped: bool = False
    error: str = ""


def gallery_version_of(home) -> int:
    """The change counter of ``home``'s gallery (SQLite or $FACENET_GALLERY_URL), opened for the call."""
    from enroll.backends import open_gallery

    with open_gallery(Path(home)) as gallery:
        return int(gallery.gallery_version())


def served_state(base_path: Path, model_name: str) -> ServedState | None:
    """The state the newest version under ``base_path`` says it serves; None if it does not say."""
    from serving import versions

    try:
        meta = json.loads((versions.version_dir(base_path, model_name) / "assets.extra" / "metadata.json").read_text())
        return ServedState(meta["model_version"], int(meta["gallery_version"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


class ServingExporter:
    """A background thread that exports ``home`` at most once per ``debounce_s`` after a change."""

    def __init__(self, home, model_name: str = DEFAULT_NAME, debounce_s: float = 2.0, keep_versions: int = 4,
                 gallery_version: Callable[[], int] | None = None,
                 on_export: Callable[[ExportRecord], None] | None = None):
        if debounce_s < 0 or keep_versions < 1:
            raise ValueError(f"debounce_s must be >= 0 and keep_versions >= 1, got {debounce_s}, {keep_versions}")
        self.home, self.model_name = layout.resolve_home(home), model_name
        self.debounce_s, self.keep_versions = float(debounce_s), int(keep_versions)
        self._gallery_version = gallery_version or (lambda: gallery_version_of(self.home))
        self._on_export = on_export
        self.records: list[ExportRecord] = []
        self._cond = threading.Condition()
        self._due: float | None = None  # monotonic time of the pending export
        self._last_start = -float("inf")
        self._failures = 0
        self._busy = self._closed = False
        self._thread = threading.Thread(target=self._run, name="serving-export", daemon=True)
        self._thread.start()

    @classmethod
    def from_env(cls, home, gallery_version: Callable[[], int] | None = None, **kwargs) -> "ServingExporter | None":
        """An exporter, unless $FACENET_SERVING_SYNC=off (a watcher owns the export)."""
        if os.environ.get(SYNC_ENV, "").strip().lower() in ("off", "0", "false", "no"):
            return None
        return cls(home, gallery_version=gallery_version, **kwargs)

    def state(self) -> ServedState:
        return ServedState(layout.read_production(self.home), self._gallery_version())

    # ------------------------------------------------------------------ the API's side
    def notify_changed(self) -> None:
        """The gallery (or the production model) changed: export within the debounce window."""
        with self._cond:
            if self._due is None:
                self._due = max(time.monotonic(), self._last_start) + self.debounce_s
                self._cond.notify_all()

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until nothing is pending or running; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: self._due is None and not self._busy, timeout)

    def close(self, timeout: float | None = 120.0) -> None:
        """Write what is pending now (without waiting for its window) and stop the thread."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout)

    # ------------------------------------------------------------------ the thread
    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._closed and (self._due is None or time.monotonic() < self._due):
                    self._cond.wait(None if self._due is None else max(0.0, self._due - time.monotonic()))
                if self._due is None:  # closed, nothing pending
                    return
                self._due, self._busy, self._last_start = None, True, time.monotonic()
            record = self._export_once()
            if self._on_export is not None:  # before flush() returns: a caller waiting sees it done
                try:
                    self._on_export(record)
                except Exception:  # noqa: BLE001  a reporting callback must not stop the exporter
                    pass
            with self._cond:
                self._busy = False
                self.records.append(record)
                if record.error:  # retried later even without another change, with a growing delay
                    self._failures += 1
                    if self._due is None and not self._closed:
                        self._due = time.monotonic() + min(MAX_RETRY_S, max(self.debounce_s, 1.0) * 2 ** self._failures)
                else:
                    self._failures = 0
                self._cond.notify_all()

    def _export_once(self) -> ExportRecord:
        from serving import versions

        start = time.perf_counter()
        base = layout.serving_dir(self.home)
        state = None
        try:
            state = self.state()  # before the rows: a change in between is exported again next time
            if served_state(base, self.model_name) == state:
                return ExportRecord(state, None, time.perf_counter() - start, 0, skipped=True)
            notes: list[str] = []
            path = export_home(self.home, self.model_name, notes=notes,
                               metadata={"gallery_version": state.gallery_version})
            seconds = time.perf_counter() - start
            meta = json.loads((path / "assets.extra" / "metadata.json").read_text())
            record = ExportRecord(state, int(path.name), seconds, versions.new_bytes(path), int(meta["gallery_faces"]))
            versions.prune(base, self.model_name, self.keep_versions)
            return record
        except Exception as exc:  # noqa: BLE001  a background thread reports, it does not die
            from trainer.cliargs import one_line

            return ExportRecord(state or ServedState(None, -1), None, time.perf_counter() - start, 0,
                                error=f"{type(exc).__name__}: {one_line(exc)}")


def watch(home, stop: threading.Event, echo: Callable[[ExportRecord], None], model_name: str = DEFAULT_NAME,
          debounce_s: float = 2.0, poll_s: float = 1.0, keep_versions: int = 4,
          heartbeat: Path | None = None) -> list[ExportRecord]:
    """``enroll export-serving --watch``: poll the served state every ``poll_s`` and export changes
    through a ``ServingExporter`` until ``stop`` is set; returns what it exported. ``heartbeat`` is
    touched after every poll that reached the gallery (a liveness probe checks its age)."""
    exporter = ServingExporter(home, model_name, debounce_s, keep_versions, on_export=echo)
    last = None
    try:
        while not stop.is_set():
            try:
                state = exporter.state()
            except Exception as exc:  # noqa: BLE001  the database restarting: try again at the next poll
                from trainer.cliargs import one_line

                echo(ExportRecord(ServedState(None, -1), None, 0.0, 0, error=f"poll: {one_line(exc)}"))
                state = None
            if state is not None and state != last:
                exporter.notify_changed()
                last = state
            if state is not None and heartbeat is not None:
                Path(heartbeat).parent.mkdir(parents=True, exist_ok=True)
                Path(heartbeat).touch()
            stop.wait(poll_s)
    finally:
        exporter.close()
    return exporter.records


def _line(record: ExportRecord) -> str:
    if record.error:
        return f"error: {record.error} (retrying)"
    if record.skipped:
        return f"up to date: the newest version serves model version {record.state.model_version}, gallery change {record.state.gallery_version}"
    return (f"exported version {record.version} (model version {record.state.model_version}, gallery change "
            f"{record.state.gallery_version}, {record.gallery_faces} faces) in {record.seconds:.2f} s, "
            f"{record.bytes_written / 2**20:.1f} MiB written")


def cmd_watch(args, home: Path):
    """``enroll export-serving --watch``: one line (or JSON object) per export on stdout until SIGTERM /
    Ctrl-C, then (summary, lines) as ``enroll.commands`` returns them."""
    import signal
    import sys
    from dataclasses import asdict

    stop = threading.Event()

    def echo(record: ExportRecord) -> None:
        print(json.dumps(asdict(record)) if getattr(args, "json", False) else _line(record), file=sys.stdout, flush=True)

    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        records = watch(home, stop, echo, args.name, args.debounce, args.poll, args.keep_versions, args.heartbeat)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    exported = [r for r in records if r.version is not None]
    summary = {"exports": len(exported), "skipped": sum(r.skipped for r in records),
               "failed": sum(bool(r.error) for r in records),
               "last_version": exported[-1].version if exported else None}
    return summary, [f"stopped: {summary['exports']} versions exported, {summary['failed']} failed exports"]
