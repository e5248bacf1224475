"""How long after add-person does TF-Serving's identify know the person? Measured end to end.

    python -m experiments.serving_lag [--sizes 1000 10000 100000] [--rounds 5] [--debounce 2]

A home with nn4_small2 (96 px, random weights) as production model and N synthetic people
(experiments/synthetic_home.py); the TF-Serving emulator (serving/testing, REST) serving its export
base; a ``ServingExporter`` (enroll/serving_sync.py) told of every change, as the API tells it.
Each round enrols a new person through ``SqliteGallery.add_person`` (the embedding of a random
image, with the production model), then asks the emulator every 50 ms to identify that image until
it names them. Reported per size: the lag (from the commit of add-person to the first served
answer naming the person), its parts (the debounce window, the export, the served answer after the
version appeared: the emulator loads a new version at its first request, as TF-Serving loads it
after its file-system poll, which adds up to ``--file_system_poll_wait_seconds``, 1 s by default),
and the new bytes per version. A burst of enrolments inside one window shows how many versions
it makes (one).

Writes experiments/results/serving_lag.json (+ .md) through experiments/results_file.py.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import serving  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)

import numpy as np

from experiments import results_file
from experiments.synthetic_home import MODEL_VERSION, fill_gallery, install_model, unit_vectors

RESULTS = Path(__file__).resolve().parent / "results" / "serving_lag.json"


def _served_within(client, image, name: str, timeout: float = 600.0) -> float:
    """Poll identify until it names ``name``; returns the monotonic time it first did."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if client.identify(image).best[0] == name:
            return time.monotonic()
        time.sleep(0.05)
    raise TimeoutError(f"identify did not name {name} within {timeout:.0f} s")


def rounds_for(home: Path, size: int, rounds: int, debounce: float, burst: int) -> dict:
    from enroll.model_versions import production
    from enroll.serving_sync import ServingExporter
    from enroll.store import SqliteGallery
    from serving import versions
    from serving.rest_client import RestClient
    from serving.testing.emulator import Repository, serve_rest

    _, _, model = production(home)
    published: list[float] = []
    server = serve_rest(Repository(home / "serving"))
    client = RestClient(f"http://127.0.0.1:{server.server_address[1]}", timeout=120, retries=0)
    rng = np.random.default_rng(size)
    lags, exports, after_publish = [], [], []
    try:
        with SqliteGallery(home) as gallery:
            exporter = ServingExporter(home, debounce_s=debounce, keep_versions=4,
                                       gallery_version=gallery.gallery_version,
                                       on_export=lambda record: published.append(time.monotonic()))
            exporter.notify_changed()  # catch up with the filled gallery (the first size: a full export)
            exporter.flush()
            client.identify(np.zeros((1, 96, 96, 3), np.float32))  # the emulator loads it
            for r in range(rounds):
                image = rng.uniform(0, 255, (1, 96, 96, 3)).astype(np.float32)
                name = f"new-{size}-{r}"
                gallery.add_person(name, [(f"crop {name}".encode(), "new.jpg")], {MODEL_VERSION: model(image).numpy()})
                changed = time.monotonic()
                exporter.notify_changed()
                served = _served_within(client, image, name)
                exporter.flush()
                lags.append(served - changed)
                after_publish.append(served - published[-1])
                exports.append(exporter.records[-1])
            before = versions.latest_version(home / "serving", "facenet")
            for b in range(burst):  # a burst inside one window: one version
                gallery.add_person(f"burst-{size}-{b}", [(f"crop burst {b}".encode(), "b.jpg")],
                                   {MODEL_VERSION: unit_vectors(1, seed=1000 + b)})
                exporter.notify_changed()
            exporter.flush()
            burst_versions = versions.latest_version(home / "serving", "facenet") - before
            exporter.close()
    finally:
        server.shutdown()
    return {"people": size, "rounds": rounds, "debounce_s": debounce,
            "lag_s": [round(x, 2) for x in lags], "lag_p50_s": round(float(np.median(lags)), 2),
            "lag_max_s": round(max(lags), 2),
            "export_s": round(float(np.median([e.seconds for e in exports])), 2),
            "export_mib": round(float(np.median([e.bytes_written for e in exports])) / 2**20, 2),
            "served_after_publish_s": round(float(np.median(after_publish)), 2),
            "burst_enrolments": burst, "burst_versions": burst_versions}


def table(rows: list[dict]) -> str:
    lines = ["| people | lag add-person → served identify, p50 / max (s) | debounce (s) | export per version (s) "
             "| new MiB per version | served after the version appeared (s) | versions for a burst of enrolments |",
             "| ---: | --- | ---: | ---: | ---: | ---: | --- |"]
    for r in rows:
        lines.append(f"| {r['people']:,} | {r['lag_p50_s']:.2f} / {r['lag_max_s']:.2f} | {r['debounce_s']:g} "
                     f"| {r['export_s']:.2f} | {r['export_mib']:.2f} | {r['served_after_publish_s']:.2f} "
                     f"| {r['burst_versions']} for {r['burst_enrolments']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 10_000, 100_000])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--debounce", type=float, default=2.0)
    parser.add_argument("--burst", type=int, default=5, help="enrolments made back to back inside one window")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args(argv)
    from trainer.models import build_model

    rows, load_before = [], os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="serving-lag-") as workdir:
        home = Path(workdir) / "home"
        install_model(home, build_model("nn4_small2", input_size=96), threshold=0.05)
        enrolled = 0
        for size in sorted(args.sizes):
            fill_gallery(home, unit_vectors(size - enrolled, seed=size))
            rows.append(rounds_for(home, size, args.rounds, args.debounce, args.burst))
            enrolled = size + args.rounds + args.burst
            print(rows[-1], flush=True)
    result = {"command": results_file.command("serving_lag", argv),
              "machine": {"cpus": os.cpu_count(),
                          "load_average_1m_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)]},
              "server": "serving.testing emulator (REST), loads a new version at its first request", "rows": rows}
    results_file.publish(Path(args.out), result, table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
