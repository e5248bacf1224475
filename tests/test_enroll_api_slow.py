"""The API's slower paths, marked ``slow`` (``pytest -m slow tests/test_enroll_api_slow.py``):

- ``enroll serve --embed-server``: embeddings from TF-Serving's gRPC API (the emulator in
  serving/testing, serving the home's own export), two uvicorn workers, CORS for one origin; the
  vectors it stores are the in-process model's; a production model TF-Serving does not serve yet,
  or an embedding server that is down, is a 503, not a wrong answer.
- A real retraining job submitted, followed and cancelled through the API, on a Ray head started
  as tests/test_retrain.py does, for a home made from a briefly trained run.
"""
import time

import httpx
import numpy as np
import pytest

from enroll import cli
from tests.api_server import model_home, running_api
from tests.test_enroll_cli import lfw, photo  # noqa: F401  (module fixtures reused)
from tests.test_retrain import ray_head, settings  # noqa: F401

pytestmark = pytest.mark.slow


def call(server, method, path, token=None, **kwargs) -> httpx.Response:
    headers = {**({"Authorization": f"Bearer {token}"} if token else {}), **kwargs.pop("headers", {})}
    return httpx.request(method, f"{server.base}{path}", headers=headers, timeout=120, **kwargs)


def token(home, scope: str) -> str:
    from enroll.tokens import SqliteTokenStore

    with SqliteTokenStore(home) as tokens:
        return tokens.create(scope)[1]


@pytest.fixture(scope="module")
def served_home(tmp_path_factory):
    """A home exported for TF-Serving, the emulator serving it over gRPC: (home, target, grpc server)."""
    from serving.testing.emulator import Repository
    from serving.testing.emulator_grpc import serve_grpc

    home = tmp_path_factory.mktemp("served") / "home"
    home.mkdir()
    model_home(home)
    assert cli.main(["export-serving", "--home", str(home)]) == 0
    server, port = serve_grpc(Repository(home / "serving", "facenet"), 0)
    yield home, f"127.0.0.1:{port}", server
    server.stop(0)


def test_embeddings_from_tf_serving(served_home, lfw):  # noqa: F811
    from enroll.crops import decode_png
    from enroll.home import store_version, write_production
    from enroll.model_versions import embed_pixels, production
    from enroll.store import SqliteGallery
    from trainer.models import build_model

    home, target, grpc_server = served_home
    secret = token(home, "admin")
    flags = ("--embed-server", target, "--workers", "2", "--cors-origin", "http://page.test")
    with running_api(home, *flags, env={"FACENET_SERVING_SYNC": "off"}, name="served") as server:
        assert call(server, "GET", "/readyz").json()["embeddings"] == "served"
        assert server.log.read_text().count("Started server process") == 2, "two uvicorn workers"
        preflight = call(server, "OPTIONS", "/v1/identify", headers={
            "Origin": "http://page.test", "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization"})
        assert preflight.status_code == 200 and preflight.headers["access-control-allow-origin"] == "http://page.test"
        other = call(server, "GET", "/healthz", headers={"Origin": "http://elsewhere.test"})
        assert "access-control-allow-origin" not in other.headers

        path = photo(lfw, "Colin_Powell", 1)
        with open(path, "rb") as f:
            data = f.read()
        added = call(server, "POST", "/v1/people", secret, data={"name": "Colin Powell"},
                     files={"photos": ("c1.jpg", data, "image/jpeg")})
        assert added.status_code == 201, added.text
        r = call(server, "POST", "/v1/identify", secret, files={"photo": ("q.jpg", data, "image/jpeg")}).json()
        assert r["name"] == "Colin Powell" and r["distance"] < 1e-3 and r["model_version"] == 1
        with SqliteGallery(home) as gallery:  # what TF-Serving embedded is what the model in process gives
            (face,) = gallery.get("Colin Powell").faces
            _, meta, model = production(home)
            local = embed_pixels(model, decode_png(gallery.crop(face.sha256), meta["image_size"])[None])
            np.testing.assert_allclose(gallery.embeddings(1)[1], local, atol=1e-5)

        # a promotion TF-Serving has not caught up with: refused, never answered by the old model
        write_production(home, store_version(home, build_model("tiny", 128, 32), {k: v for k, v in meta.items() if k != "version"}))
        try:
            refused = call(server, "POST", "/v1/identify", secret, files={"photo": ("q.jpg", data, "image/jpeg")})
            assert refused.status_code == 503 and "serves model version 1, production is 2" in refused.json()["error"]
            assert call(server, "GET", "/readyz").status_code == 503
        finally:
            write_production(home, 1)
        grpc_server.stop(0)
        down = call(server, "POST", "/v1/identify", secret, files={"photo": ("q.jpg", data, "image/jpeg")})
        assert down.status_code == 503 and down.json()["error"].startswith(f"embedding server {target}: ")


def test_retraining_through_the_api(trained_run, ray_head, tmp_path):  # noqa: F811
    home = tmp_path / "home"
    assert cli.main(["init", "--run", str(trained_run), "--home", str(home)]) == 0
    settings(home, ray_address=ray_head, retrain_epochs=50, retrain_steps_per_epoch=50)
    secret = token(home, "admin")
    with running_api(home, name="retrain") as server:
        submitted = call(server, "POST", "/v1/retrain", secret)
        assert submitted.status_code == 202, submitted.text
        job = submitted.json()["job"]
        followed = call(server, "GET", f"/v1/retrain/{job}", secret).json()
        assert followed["state"] in ("submitted", "running") and followed["params"]["reason"] == "api"
        deadline = time.monotonic() + 120
        while call(server, "GET", f"/v1/retrain/{job}", secret).json()["state"] == "submitted":
            assert time.monotonic() < deadline, "the job never started"
            time.sleep(1)
        cancelled = call(server, "DELETE", f"/v1/retrain/{job}", secret)
        assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled", cancelled.text
        assert call(server, "GET", f"/v1/retrain/{job}", secret).json()["state"] == "cancelled"
        assert (home / "PRODUCTION").read_text().strip() == "1", "nothing promoted"
