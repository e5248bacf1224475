"""Connecting to Ray: a running cluster when one is given, else a local one started in-process;
and a local Ray head for Ray jobs that is stopped by whoever started it.

``ray job submit`` sets ``RAY_ADDRESS`` for the driver, so the same entry point runs on the
cluster it was submitted to; ``ray.address: auto`` attaches to a cluster started with
``ray start`` on this machine; with no address anywhere, a new local Ray is started in-process (the
embedded default; it ends with the process). Every worker gets ``TF_USE_LEGACY_KERAS=1`` through
the runtime env so that tf-keras is chosen before TensorFlow is first imported in the worker process.

``local_head`` is for commands that submit Ray jobs and must leave nothing running
(``experiments/lifecycle.py``): given an address it uses that cluster and leaves it alone, else it
starts ``ray start --head --block`` on free ports and stops that head (all its processes) when the
``with`` block ends, normally, on an error or on Ctrl-C.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

# RAY_TRAIN_ENABLE_PRINT_PATCH=0: a Ray Train worker's print() stays a print to its stdout (Ray
# Train would log it, and print it too, so every epoch line reached the driver twice); its stdout
# is what trainer.console shows of a worker, its stderr (logs) goes to the log file only.
WORKER_ENV = {"TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "2", "RAY_TRAIN_ENABLE_PRINT_PATCH": "0"}


def ensure_ray(address: str = "") -> None:
    import ray

    if ray.is_initialized():
        return
    # log_to_driver: worker output (the chief's progress bar and epoch lines) is printed by the
    # driver; trainer.console keeps the noise among it off the terminal where a command asks.
    kwargs = dict(runtime_env={"env_vars": WORKER_ENV}, ignore_reinit_error=True, log_to_driver=True)
    address = address or os.environ.get("RAY_ADDRESS", "")
    if address:
        ray.init(address=address, **kwargs)
    else:
        # "local", not None: a bare ray.init() attaches to whatever cluster /tmp/ray last recorded,
        # which may be someone else's or gone. Use ray.address: auto (or RAY_ADDRESS) for that.
        ray.init(address="local", include_dashboard=False, **kwargs)


def bounded_tasks(function, calls: list[tuple], workers: int = 0):
    """Run ``function(*call)`` for every call as a 1-CPU Ray task, yielding each result as it
    finishes; at most twice ``workers`` (default: the cluster's CPUs) are in flight, so that a big
    dataset does not flood the object store. Needs ``ensure_ray`` first."""
    import ray

    task = ray.remote(num_cpus=1)(function)
    limit = workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
    pending = []
    for call in calls:
        if len(pending) >= limit * 2:
            done, pending = ray.wait(pending, num_returns=1)
            yield from ray.get(done)
        pending.append(task.remote(*call))
    while pending:
        done, pending = ray.wait(pending, num_returns=1)
        yield from ray.get(done)


def shutdown_ray() -> None:
    """End this process's connection to Ray, and the in-process local Ray if it started one."""
    if "ray" in sys.modules:
        import ray

        if ray.is_initialized():
            ray.shutdown()


def _free_ports(count: int) -> list[int]:
    """``count`` distinct free ports: every probe stays bound until all are drawn, since a port closed
    at once may be handed out again by the next probe (two Ray components on one port: no head)."""
    with contextlib.ExitStack() as probes:
        ports = []
        for _ in range(count):
            probe = probes.enter_context(socket.socket())
            probe.bind(("127.0.0.1", 0))
            ports.append(probe.getsockname()[1])
        return ports


class LocalHead:
    """A ``ray start --head --block`` process of our own and the Ray processes it started."""

    def __init__(self, log_file: str | Path | None = None, timeout: float = 180):
        ray = shutil.which("ray", path=str(Path(sys.executable).parent)) or shutil.which("ray") or "ray"
        names = ("port", "dashboard-port", "dashboard-agent-listen-port", "dashboard-agent-grpc-port",
                 "runtime-env-agent-port", "metrics-export-port", "ray-client-server-port")
        ports = dict(zip(names, _free_ports(len(names))))
        self.gcs_port, self.dashboard = ports["port"], f"http://127.0.0.1:{ports['dashboard-port']}"
        env = {**os.environ,
               # Job entry points run "python": this interpreter's, even when its venv is not activated.
               "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
               "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0"}  # nothing to drain: stop at once
        env.pop("RAY_ADDRESS", None)
        out = open(log_file, "ab") if log_file else subprocess.DEVNULL  # noqa: SIM115
        try:
            self.process = subprocess.Popen(
                [ray, "start", "--head", "--block", "--dashboard-host", "127.0.0.1", "--disable-usage-stats",
                 *[arg for name, port in ports.items() for arg in (f"--{name}", str(port))]],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env)
        finally:
            if out is not subprocess.DEVNULL:
                out.close()
        self._family: set = set()
        try:
            self._wait_until_up(timeout)
        except BaseException:
            self.stop()
            raise

    def _wait_until_up(self, timeout: float) -> None:
        deadline = time.time() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"`ray start --head` exited with status {self.process.returncode}")
            try:
                urllib.request.urlopen(f"{self.dashboard}/api/version", timeout=5).close()
                return
            except urllib.error.HTTPError:
                return  # it answers (a token-protected cluster refuses without the token)
            except OSError:
                if time.time() > deadline:
                    raise RuntimeError(f"the local Ray head's dashboard at {self.dashboard} did not answer "
                                       f"within {timeout:.0f} s") from None
                time.sleep(1)

    def processes(self) -> set:
        """The head's processes: those of its session (found by its GCS port), their children, itself."""
        import psutil

        try:
            found = {psutil.Process(self.process.pid)}
        except psutil.NoSuchProcess:
            found = set()
        session = ""
        for proc in psutil.process_iter(["cmdline"]):
            cmdline = proc.info["cmdline"] or []
            if f"--gcs_server_port={self.gcs_port}" in cmdline:
                session = next((Path(arg.split("=", 1)[1]).parent.name for arg in cmdline
                                if arg.startswith("--log_dir=")), "")
        if session:
            found |= {proc for proc in psutil.process_iter(["cmdline"])
                      if session in " ".join(proc.info["cmdline"] or [])}
        for proc in list(found):
            with contextlib.suppress(psutil.Error):
                found |= set(proc.children(recursive=True))
        return found

    def stop(self, timeout: float = 60) -> None:
        """SIGTERM to ``ray start --block``: Ray stops every process it started; what outlives it is killed."""
        import psutil

        with contextlib.suppress(Exception):
            self._family = self.processes()  # before they go: job drivers are not named by the session
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        _, alive = psutil.wait_procs(list(self._family), timeout=10)
        for proc in alive:
            with contextlib.suppress(psutil.Error):
                proc.kill()
        psutil.wait_procs(alive, timeout=10)
        current = Path("/tmp/ray/ray_current_cluster")  # `ray start` records its address for bare ray.init()s
        with contextlib.suppress(OSError):
            if current.read_text().strip().endswith(f":{self.gcs_port}"):
                current.unlink()


@contextlib.contextmanager
def local_head(address: str = "", log_file: str | Path | None = None):
    """Yield a Ray cluster address to submit jobs to: ``address`` when given (left running: it is
    not ours), else the dashboard URL of a local head started here and stopped on leaving the block."""
    if address:
        yield address
        return
    head = LocalHead(log_file)
    try:
        yield head.dashboard
    finally:
        head.stop()
