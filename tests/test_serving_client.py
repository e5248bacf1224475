"""serving.client: REST, gRPC and in-process clients against real servers on 127.0.0.1.

The servers are ``serving.testing.emulator`` (TF-Serving's REST JSON and gRPC services over the
exported SavedModel); faults are injected server-side through its hook, never by mocking a client.
The last test runs against a real ``tensorflow_model_server`` when one is on PATH.
"""
import shutil
import socket
import subprocess
import threading
import time

import numpy as np
import pytest

import serving  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)

from serving.client import GrpcClient, InProcessClient, RestClient, ServingError, connect
from serving.testing.emulator import Drop, Fault, Repository, serve_rest
from serving.testing.emulator_grpc import serve_grpc
from serving.export import export
from serving.models_config import write_models_config

SIZE = 32


class Faults:
    """Server-side behaviour per predict request: a queue of actions, then normal answers."""

    def __init__(self):
        self.actions, self.calls = [], 0

    def __call__(self, kind: str) -> None:
        if kind != "predict":
            return
        self.calls += 1
        action = self.actions.pop(0) if self.actions else None
        if isinstance(action, (int, float)) and not isinstance(action, bool) and action < 100:
            time.sleep(action)  # a slow server
        elif isinstance(action, int):
            raise Fault(action, f"injected HTTP {action}")
        elif action == "drop":
            raise Drop()

    def reset(self, *actions):
        self.actions, self.calls = list(actions), 0


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    import tf_keras as keras

    from trainer.models import build_model

    keras.utils.set_random_seed(1)
    model = build_model("tiny", input_size=SIZE)
    images = np.random.default_rng(1).uniform(0, 255, (4, SIZE, SIZE, 3)).astype(np.float32)
    emb = model(images, training=False).numpy()
    stranger = np.linalg.norm(emb[:3] - emb[3], axis=1).min()
    assert stranger > 0.005
    threshold = float(stranger / 2)  # image 3 is nobody; 0..2 are enrolled (distance ~0)
    base = tmp_path_factory.mktemp("serving")
    export(model, base, gallery_embeddings=emb[:3], gallery_names=["ann", "bob", "cy"], threshold=threshold)
    faults = Faults()
    repository = Repository(base)
    rest = serve_rest(repository, hook=faults)
    grpc_server, grpc_port = serve_grpc(repository, hook=faults)
    yield {"model": model, "images": images, "emb": emb, "base": base, "threshold": threshold, "faults": faults, "repository": repository,
           "rest": f"http://127.0.0.1:{rest.server_address[1]}", "grpc": f"127.0.0.1:{grpc_port}"}
    rest.shutdown()
    grpc_server.stop(0)


@pytest.fixture
def faults(world):
    world["faults"].reset()
    return world["faults"]


def _pngs(images):
    import cv2

    return [cv2.imencode(".png", im.astype(np.uint8)[:, :, ::-1])[1].tobytes() for im in images]


@pytest.mark.parametrize("kind", ["rest", "grpc", "inprocess"])
def test_round_trip(world, faults, kind):
    client = {"rest": lambda: RestClient(world["rest"]), "grpc": lambda: GrpcClient(world["grpc"]),
              "inprocess": lambda: InProcessClient(world["base"])}[kind]()
    model, images, emb = world["model"], world["images"], world["emb"]
    np.testing.assert_allclose(client.embed(images), emb, atol=1e-5)
    np.testing.assert_allclose(client.embed(images[0]), emb[:1], atol=1e-5)  # one image, no batch axis
    uint8 = images.astype(np.uint8)
    reference = model(uint8.astype(np.float32), training=False).numpy()
    np.testing.assert_allclose(client.embed(uint8), reference, atol=1e-5)
    np.testing.assert_allclose(client.embed_jpeg(_pngs(images)), reference, atol=1e-5)
    result = client.identify(images)
    assert result.best == ["ann", "bob", "cy", None]
    assert [row[0] for row in result.names] == ["ann", "bob", "cy", result.names[3][0]]
    assert result.distances.shape == (4, 3) and result.unknown.tolist() == [False, False, False, True]
    assert client.identify_jpeg(_pngs(images[:3])).best == ["ann", "bob", "cy"]
    meta = client.metadata()
    assert meta["image_size"] == SIZE and meta["gallery_people"] == 3 and meta["threshold"] == world["threshold"]
    if kind != "inprocess":
        assert client.status()["model_version_status"][0]["state"] == "AVAILABLE"
        defs = client.model_metadata()["metadata"]["signature_def"]["signature_def"]
        assert {"serving_default", "embed_jpeg", "identify", "metadata"} <= set(defs)
        assert faults.calls == 7  # one predict per call above


def test_rest_retries_transient_failures(world, faults):
    faults.reset(503, "drop", 502)
    client = RestClient(world["rest"], retries=3, backoff=0.01)
    np.testing.assert_allclose(client.embed(world["images"][:1]), world["emb"][:1], atol=1e-5)
    assert faults.calls == 4


def test_rest_gives_up_with_one_line_error(world, faults):
    faults.reset(*[503] * 10)
    with pytest.raises(ServingError) as err:
        RestClient(world["rest"], retries=2, backoff=0.01).embed(world["images"][:1])
    assert faults.calls == 3 and "HTTP 503" in str(err.value) and "gave up after 3 attempts" in str(err.value)
    assert "\n" not in str(err.value)


def test_rest_timeout(world, faults):
    faults.reset(3.0, 3.0)
    start = time.perf_counter()
    with pytest.raises(ServingError, match="timed out after 0.2 s"):
        RestClient(world["rest"], timeout=0.2, retries=1, backoff=0.01).embed(world["images"][:1])
    assert faults.calls == 2 and time.perf_counter() - start < 2.5  # well before the server answers


def test_rest_client_errors_are_not_retried(world, faults):
    faults.reset(400)
    with pytest.raises(ServingError, match="HTTP 400: injected HTTP 400"):
        RestClient(world["rest"], retries=3).embed(world["images"][:1])
    assert faults.calls == 1
    with pytest.raises(ServingError, match="HTTP 404: Servable not found"):
        RestClient(world["rest"], model="nobody").embed(world["images"][:1])
    with pytest.raises(ServingError, match="HTTP 400: .*image"):
        RestClient(world["rest"]).embed_jpeg([b"not an image"])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_rest_waits_for_a_server_that_starts_late(world):
    port = _free_port()
    started = []
    timer = threading.Timer(0.4, lambda: started.append(serve_rest(world["repository"], port)))
    timer.start()
    try:
        client = RestClient(f"http://127.0.0.1:{port}", retries=6, backoff=0.1)
        np.testing.assert_allclose(client.embed(world["images"][:1]), world["emb"][:1], atol=1e-5)
    finally:
        timer.join()
        for server in started:
            server.shutdown()
    with pytest.raises(ServingError, match="Connection refused.*gave up after 2 attempts"):
        RestClient(f"http://127.0.0.1:{_free_port()}", retries=1, backoff=0.01).embed(world["images"][:1])


def test_grpc_retries_and_errors(world, faults):
    client = GrpcClient(world["grpc"], retries=3, backoff=0.01)
    faults.reset(503, "drop")
    np.testing.assert_allclose(client.embed(world["images"][:1]), world["emb"][:1], atol=1e-5)
    assert faults.calls == 3
    faults.reset(1.0, 1.0)
    with pytest.raises(ServingError, match="DEADLINE_EXCEEDED.*gave up after 2 attempts"):
        GrpcClient(world["grpc"], timeout=0.2, retries=1, backoff=0.01).embed(world["images"][:1])
    faults.reset(400)
    with pytest.raises(ServingError, match="INVALID_ARGUMENT: injected HTTP 400"):
        client.embed(world["images"][:1])
    assert faults.calls == 1
    with pytest.raises(ServingError, match="NOT_FOUND"):
        GrpcClient(world["grpc"], model="nobody").embed(world["images"][:1])
    with pytest.raises(ServingError, match="UNAVAILABLE.*gave up after 2 attempts"):
        GrpcClient(f"127.0.0.1:{_free_port()}", retries=1, backoff=0.01, timeout=2).embed(world["images"][:1])


def test_version_pinning(world, tmp_path):
    export(world["model"], tmp_path)  # version 1: empty gallery
    export(world["model"], tmp_path, gallery_embeddings=world["emb"][:1], gallery_names=["ann"],
           threshold=world["threshold"])
    repository = Repository(tmp_path)
    rest = serve_rest(repository)
    try:
        url = f"http://127.0.0.1:{rest.server_address[1]}"
        assert RestClient(url).identify(world["images"][:1]).best == ["ann"]
        assert RestClient(url, version=1).identify(world["images"][:1]).best == [None]
        assert [s["version"] for s in RestClient(url).status()["model_version_status"]] == ["1", "2"]
    finally:
        rest.shutdown()


def test_connect_picks_the_transport(world, monkeypatch):
    assert isinstance(connect("http://127.0.0.1:8501"), RestClient)
    assert isinstance(connect("grpc://127.0.0.1:8500"), GrpcClient)
    assert isinstance(connect(base_path=world["base"]), InProcessClient)
    monkeypatch.setenv("FACENET_HOME", str(world["base"].parent / "nowhere"))
    with pytest.raises(ServingError, match="cannot load a SavedModel"):
        connect()


@pytest.mark.skipif(shutil.which("tensorflow_model_server") is None,
                    reason="tensorflow_model_server is not on PATH (install TF-Serving or use its Docker image)")
def test_against_tensorflow_model_server(world, tmp_path):
    grpc_port, rest_port = _free_port(), _free_port()
    config = write_models_config(world["base"], tmp_path / "models.config")
    server = subprocess.Popen(["tensorflow_model_server", f"--port={grpc_port}", f"--rest_api_port={rest_port}",
                               f"--model_config_file={config}"], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        rest, grpc_client = RestClient(f"http://127.0.0.1:{rest_port}"), GrpcClient(f"127.0.0.1:{grpc_port}")
        deadline = time.time() + 60
        while True:
            try:
                if rest.status()["model_version_status"][0]["state"] == "AVAILABLE":
                    break
            except ServingError:
                pass
            assert time.time() < deadline and server.poll() is None, "tensorflow_model_server did not load the model"
            time.sleep(0.5)
        for client in (rest, grpc_client):
            np.testing.assert_allclose(client.embed(world["images"]), world["emb"], atol=1e-5)
            np.testing.assert_allclose(client.embed_jpeg(_pngs(world["images"])),
                                       InProcessClient(world["base"]).embed_jpeg(_pngs(world["images"])), atol=1e-5)
            assert client.identify(world["images"]).best == ["ann", "bob", "cy", None]
            assert client.metadata()["gallery_people"] == 3
    finally:
        server.terminate()
        server.wait(timeout=10)
