"""The MLflow UI shows the warm-vs-full experiment: a browser test of the comparison page.

``python -m experiments.warm_vs_full`` runs (as a user would, in a subprocess) with the tiny model on
synthetic faces into a temporary sqlite store; ``mlflow ui`` serves that store, and headless
Chromium (Debian's ``chromium`` + ``chromedriver``, installed by ``.ci/install-browser.sh``)
opens the run comparison of N, N_prim and N_adpt. The test asserts the three runs and their
compute metrics (names and values) are on the page and saves a screenshot to
``$FACENET_TEST_ARTIFACTS`` (default ``<repo>/test-artifacts/``).
"""
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
EXPERIMENT = "warm_vs_full"
LABELS = ("N", "N_prim", "N_adpt")
COMPUTE_METRICS = ("compute/total_steps", "compute/total_images", "compute/total_train_flops",
                   "compute/total_wall_seconds")
FIRST_TOTAL = "compute/total_gpu_seconds"  # metrics are listed by name: the first compute/total_* row

pytestmark = pytest.mark.skipif(not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
                                reason=f"{CHROMIUM} / {CHROMEDRIVER} absent: run .ci/install-browser.sh")
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium not installed (pip install -e '.[test]')")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from tests.test_train import smoke_config  # noqa: E402


@pytest.fixture(scope="module")
def store(synthetic_root, tmp_path_factory):
    """Run warm_vs_full.py with the smallest config that still makes its three child runs."""
    work = tmp_path_factory.mktemp("warm_vs_full_ui")
    config = smoke_config(synthetic_root, work, epochs=1, steps_per_epoch=2, identities_per_batch=3,
                          images_per_identity=2).to_dict()
    config["mlflow"] = {"experiment": EXPERIMENT}  # the store comes from MLFLOW_TRACKING_URI, as a user's would
    config["eval"]["pairs_per_fold"] = 5
    (work / "config.yaml").write_text(json.dumps(config))  # JSON is YAML
    uri = f"sqlite:///{work / 'mlflow.db'}"
    # RAY_ADDRESS dropped so the identity preparation starts its own local Ray, not someone else's cluster.
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | {"MLFLOW_TRACKING_URI": uri}
    # --work/--results in tmp: the committed experiments/results/ must not be overwritten.
    result = subprocess.run(
        [sys.executable, "-m", "experiments.warm_vs_full", "--config", str(work / "config.yaml"),
         "--new", "2", "--work", str(work / "work"), "--results", str(work / "results")],
        cwd=work, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return uri, work


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serve_ui(uri: str, work: Path):
    """``mlflow ui`` on the store ``uri``; yields its base URL and always stops it (and its children)."""
    port = free_port()
    log = open(work / "mlflow-ui.log", "w")
    # Its own session: `mlflow ui` forks uvicorn and job-runner processes, and the whole group must go.
    # 127.0.0.1 passes the default host-header check (localhost and private IPs), so the security
    # middleware can stay on.
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", "127.0.0.1",
         "--port", str(port), "--workers", "1"],
        cwd=work, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            assert server.poll() is None, f"mlflow ui exited: {(work / 'mlflow-ui.log').read_text()[-3000:]}"
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "mlflow ui did not answer within 90 s"
            time.sleep(0.5)
        yield base
    finally:  # the group exists until the unwaited leader is reaped, so killpg cannot miss
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        log.close()


@pytest.fixture(scope="module")
def mlflow_ui(store):
    with serve_ui(*store) as base:
        yield base


@contextmanager
def headless_chromium(profile: Path):
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)  # explicit binary + driver: Selenium Manager would try to download
    # The background-networking flags stop Chromium phoning home, which the closed network refuses.
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1600,1200",
                 f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=webdriver.ChromeService(executable_path=str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    with headless_chromium(tmp_path_factory.mktemp("chromium-profile")) as driver:
        yield driver


def artifacts_dir() -> Path:
    folder = Path(os.environ.get("FACENET_TEST_ARTIFACTS") or REPO / "test-artifacts")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


# The comparison's metrics table is two react-virtualized grids side by side, metric names and
# values, 300 px high; cells are absolutely positioned, so a row's cells share their style.top.
GRIDS = """
    const link = [...document.querySelectorAll('.ReactVirtualized__Grid a')]
        .find(a => a.textContent.trim() === arguments[0]);
    const names = link.closest('.ReactVirtualized__Grid');
    const values = [...names.parentElement.parentElement.querySelectorAll('.ReactVirtualized__Grid')]
        .find(grid => grid !== names);
    const top = link.closest('.ReactVirtualized__Grid__innerScrollContainer > *').style.top;
"""


def metric_row(driver, name: str) -> list[str]:
    """The values shown for metric ``name``, one per run column."""
    return driver.execute_script(GRIDS + """
        return [...values.querySelectorAll('.ReactVirtualized__Grid__innerScrollContainer > *')]
            .filter(cell => cell.style.top === top).map(cell => cell.textContent.trim());""", name)


def scroll_metrics_to(driver, name: str) -> bool:
    """Scroll the metrics table so row ``name`` is at the top; True once it has stayed there.

    MLflow 3.17 syncs the names grid from the values grid's scroll handler with the values grid's
    not-yet-updated state, i.e. one scroll behind (a user sees names and values misaligned too),
    so the names grid is scrolled directly, and again on the next poll if that handler undid it.
    """
    return driver.execute_script(GRIDS + """
        const y = parseInt(top), settled = names.scrollTop === y && values.scrollTop === y;
        values.scrollTop = y;
        names.scrollTop = y;
        return settled;""", name)


def test_compare_page_shows_the_three_runs_and_their_compute_metrics(store, mlflow_ui, browser):
    from mlflow import MlflowClient

    client = MlflowClient(store[0])
    experiment = client.get_experiment_by_name(EXPERIMENT)
    children = {run.info.run_name.split("-")[1]: run for run in client.search_runs(
        [experiment.experiment_id], filter_string="tags.mlflow.parentRunId != ''")}
    assert sorted(children) == sorted(LABELS)
    assert_compare_page(browser, mlflow_ui, [children[label] for label in LABELS], "mlflow-ui-warm-vs-full-compare.png")


def assert_compare_page(browser, base: str, runs: list, screenshot: str) -> None:
    """MLflow's comparison of ``runs`` (one experiment) shows each run's name and the compute
    totals each run logged, value by value; the page is saved as ``screenshot``."""
    # MLflow 3's UI routes in the URL fragment; the query holds JSON lists (its getCompareRunPageRoute).
    query = urllib.parse.urlencode({"runs": json.dumps([run.info.run_id for run in runs]),
                                    "experiments": json.dumps([runs[0].info.experiment_id])})
    browser.get(f"{base}/#/compare-runs?{query}")
    body = lambda: browser.find_element(By.TAG_NAME, "body").text  # noqa: E731  (visible text only)
    try:
        WebDriverWait(browser, 60).until(lambda _: all(run.info.run_name in body() for run in runs)
                                         and FIRST_TOTAL in browser.page_source)
        # Show run names and compute totals in one screenshot: fold away the plots and the long
        # parameter table, shut the assistant side panel, scroll the metrics table to the totals.
        for section in ("Visualizations", "Parameters"):
            browser.find_element(By.XPATH, f"//*[@role='button' and normalize-space()='{section}']").click()
        for close in browser.find_elements(By.XPATH, "//button[@aria-label='Close']"):
            close.click()
        WebDriverWait(browser, 30).until(lambda _: scroll_metrics_to(browser, FIRST_TOTAL)
                                         and all(name in body() for name in COMPUTE_METRICS))
    finally:  # also on failure: the screenshot is what shows what went wrong
        browser.save_screenshot(str(artifacts_dir() / screenshot))

    text = body()
    columns = sorted(runs, key=lambda run: text.index(run.info.run_name))  # left to right
    for name in COMPUTE_METRICS:
        shown = [float(value) for value in metric_row(browser, name)]
        expected = [run.data.metrics[name] for run in columns]
        # The page rounds to three decimals.
        assert shown == pytest.approx(expected, rel=1e-6, abs=1e-3), (name, shown, expected)
