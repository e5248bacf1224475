"""A quiet console and a full log file for long commands (``trainer.train``, ``experiments/lifecycle.py``).

Inside ``with capture(log_path):`` the terminal shows what a person running the command needs —
stage headers, progress bars (tqdm, Keras' Progbar, also the chief Ray worker's), per-epoch lines,
results, errors and tracebacks — and ``log_path`` receives everything, the lines kept off the
terminal included:

- **File descriptor 2 goes to the log file.** TensorFlow 2.21 and XLA write their start-up lines
  (``oneDNN custom operations are on``, ``Could not find cuda drivers``, ``failed call to cuInit``,
  absl's ``All log messages before absl::InitializeLog() ...``) from C++ straight to fd 2, before
  ``TF_CPP_MIN_LOG_LEVEL`` or any other setting is read, so the driver's own copies can only be
  redirected, not silenced.
- **sys.stdout and sys.stderr become tees:** every write goes to the log file, and to the terminal
  unless the line is noise (``is_noise``). Ray forwards its workers' output to the driver by
  printing each line, prefixed ``(RayTrainWorker pid=…)``, to the driver's sys.stdout or
  sys.stderr as the worker wrote it (``log_to_driver``). A worker's stdout carries what the code
  means a person to see — the chief's Keras progress bar and its ``print``ed epoch lines
  (``ray_setup.WORKER_ENV`` turns off Ray Train's patch that turns ``print`` into log records) —
  and is shown; a worker's stderr carries its logs — TensorFlow's start-up lines, Python logging
  (which Ray Train's worker handler prints without level or logger name), warnings, Ray Train's
  "Checkpoint successfully created" — and is kept for the log file. Worker failures still reach
  the terminal: Ray re-raises them in the driver. Also dropped: any line of Ray Train's bookkeeping
  actors (``TrainController``, ``PlacementGroupCleaner``, whose "Failed to query Ray Train
  Controller actor state" repeats every second when the dashboard's state API is off), and log
  records in the formats of Ray, Python logging, absl/glog, TensorFlow, MLflow and alembic at
  levels below ERROR (plus TensorFlow's and absl's C++ lines at ERROR), and Python warnings.
  ``RAY_DEDUP_LOGS=0`` (set here unless already set, before Ray is imported) makes the log file
  hold every worker line rather than ``[repeated Nx]`` summaries.

Matching sources and formats rather than messages keeps new messages of the same kinds off the
terminal; a line of the driver in no known format shows, so an unexpected message is not hidden.
"""
from __future__ import annotations

import contextlib
import os
import re
import sys
import threading
import traceback
from pathlib import Path

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
# Ray's prefix on a forwarded worker line: "(RayTrainWorker pid=123, ip=10.0.0.1) ", "(raylet) ".
_RAY_PREFIX = re.compile(r"^\((?P<who>[^()]*)\) ")
_QUIET_ACTORS = re.compile(r"^(TrainController|PlacementGroupCleaner|SynchronizationActor)\b")
_RECORD = re.compile("|".join([
    r"[IWE]\d{4} [\d:.]+\s+\d+ \S+:\d+\] ",                          # absl / glog (C++ and absl-py)
    r"WARNING: All log messages before absl::InitializeLog\(\)",
    r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: [IWE] \S+:\d+\] ",        # TensorFlow's own C++ format
    r"To enable the following instructions: .*rebuild TensorFlow",   # its cpu_feature_guard follow-up
    r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+\s+(DEBUG|INFO|WARNING) \S+:\d+ -- ",  # Ray's logger
    r"\d{4}/\d\d/\d\d \d\d:\d\d:\d\d (DEBUG|INFO|WARNING) [\w.]+: ",  # MLflow's logger
    r"(DEBUG|INFO|WARNING):[\w.]+:",                                  # Python logging's default
    r"(DEBUG|INFO|WARNING)\s+\[[\w.]+\] ",                            # alembic (MLflow's sqlite store)
    r"\S+:\d+: \w*Warning: ",                                         # warnings.warn
]))

LOG_NAME = "lifecycle.log"


def is_noise(line: str, stderr: bool = False) -> bool:
    """Whether a line (no line ending) written to sys.stderr (``stderr``) or sys.stdout stays off
    the terminal; see the module docstring."""
    line = _ANSI.sub("", line)
    prefix = _RAY_PREFIX.match(line)
    if prefix:
        who = prefix.group("who")
        if _QUIET_ACTORS.match(who) or (stderr and "pid=" in who):
            return True  # Ray Train's bookkeeping, or a worker's stderr: its logs (not raylet's notices)
        line = line[prefix.end():]
    return bool(_RECORD.match(line.lstrip()))


def _message(line: str) -> str:
    """The line without Ray's worker prefix."""
    line = _ANSI.sub("", line)
    prefix = _RAY_PREFIX.match(line)
    return line[prefix.end():] if prefix else line


class _Tee:
    """A text stream writing everything to the log and the lines that are not noise to the terminal.

    A line is judged by its beginning: it is held until its end, or until a flush or a carriage
    return (a progress bar redrawing) shows it early, and the rest of the line follows the verdict.
    Each thread has its own line in progress (Ray's log thread and the main thread both print).
    The lines after a dropped one in the same write belong to the same log record (a logging handler
    writes a record at once: TensorFlow's deprecation warnings run on over "Instructions for
    updating:" lines) and are dropped with it, and so are indented lines after a dropped one.
    """

    def __init__(self, terminal, log, lock: threading.Lock, stderr: bool):
        self._terminal, self._log, self._lock, self._stderr = terminal, log, lock, stderr
        self._local = threading.local()
        self._after: object = None  # once the capture ends: the stream late writers reach instead

    def detach(self, stream) -> None:
        self.flush()
        self._after = stream

    def _state(self):
        state = self._local
        if not hasattr(state, "pending"):
            state.pending = ""      # the beginning of a line not judged yet
            state.verdict = None    # True/False: the line in progress was judged (shown/dropped) early
            state.dropping = False  # the last complete line was dropped (its indented follow-ups go too)
        return state

    def _judge(self, state, line: str) -> bool:
        message = _message(line)
        if state.dropping and message[:1] in (" ", "\t") and message.strip():
            return False
        state.dropping = is_noise(line, self._stderr)
        return not state.dropping

    def write(self, text: str) -> int:
        if self._after is not None:  # e.g. a Ray log thread still printing after the capture ended
            return self._after.write(text)
        state = self._state()
        *lines, tail = (state.pending + text).split("\n")
        state.pending, shown = "", []
        for i, line in enumerate(lines):
            if state.verdict is not None:
                show = state.verdict
            elif i > 0 and state.dropping:
                show = False  # one write is one log record: "Instructions for updating:" under a dropped one
            else:
                show = self._judge(state, line)
            state.verdict = None
            if show:
                shown.append(line + "\n")
        if lines and state.dropping and tail and state.verdict is None:
            state.verdict = False  # the rest of the dropped record
        if state.verdict is None and "\r" in tail:  # tqdm / Progbar redraw: show it now
            state.verdict = self._judge(state, tail.replace("\r", ""))
        if state.verdict is None:
            state.pending = tail
        elif state.verdict:
            shown.append(tail)
        with self._lock:
            self._log.write(_ANSI.sub("", text))
            if shown:
                self._terminal.write("".join(shown))
                self._terminal.flush()
        return len(text)

    def flush(self) -> None:
        if self._after is not None:
            return self._after.flush()
        state = self._state()
        with self._lock:
            if state.pending:
                state.verdict = self._judge(state, state.pending)
                if state.verdict:
                    self._terminal.write(state.pending)
                state.pending = ""
            self._terminal.flush()
            self._log.flush()

    def isatty(self) -> bool:
        return self._terminal.isatty()

    def fileno(self) -> int:
        return self._terminal.fileno()

    def __getattr__(self, name):  # encoding, errors, buffer, ... as the terminal stream has them
        return getattr(self._terminal, name)


class Capture:
    """What ``capture`` yields: the log file's path, and a way to write to the log alone."""

    def __init__(self, path: Path, log, lock: threading.Lock):
        self.path, self._log, self._lock = path, log, lock

    def log_only(self, text: str) -> None:
        with self._lock:
            self._log.write(_ANSI.sub("", text if text.endswith("\n") else text + "\n"))
            self._log.flush()


@contextlib.contextmanager
def capture(log_path: str | Path):
    """Quiet terminal, full log at ``log_path`` (appended to) for the duration; see the module docstring."""
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")  # read when Ray is imported: a full log, not summaries
    path = Path(log_path).resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    log = open(path, "a", buffering=1, encoding="utf-8", errors="replace")  # noqa: SIM115
    lock = threading.Lock()
    saved_fd2 = os.dup(2)
    terminal_err = os.fdopen(saved_fd2, "w", buffering=1, encoding=sys.stderr.encoding or "utf-8",
                             errors="backslashreplace", closefd=False)
    saved = sys.stdout, sys.stderr
    os.dup2(log.fileno(), 2)  # C++ writes to fd 2 (TensorFlow, absl, Ray core) now land in the log
    tees = _Tee(saved[0], log, lock, stderr=False), _Tee(terminal_err, log, lock, stderr=True)
    sys.stdout, sys.stderr = tees
    try:
        yield Capture(path, log, lock)
    except BaseException as exc:
        if not isinstance(exc, SystemExit):  # the interpreter prints it to the terminal afterwards
            Capture(path, log, lock).log_only("".join(traceback.format_exception(exc)))
        raise
    finally:
        os.dup2(saved_fd2, 2)
        for tee, stream in zip(tees, saved):
            with contextlib.suppress(Exception):
                tee.detach(stream)
        sys.stdout, sys.stderr = saved
        terminal_err.close()
        os.close(saved_fd2)
        log.close()
