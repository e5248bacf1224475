"""What every request of one API process shares, opened once at start-up and closed at shutdown:
the home, the gallery (wrapped in its live index), the token store, the embedder and, for a served
home, the TF-Serving exporter that follows the gallery; and whether
the process is ready (the production model and the face detector loaded, the gallery answering).

Loading TensorFlow, the production model and MTCNN takes seconds, so it happens on a thread of its
own: /healthz answers at once (the process is alive), /readyz only once the models are loaded
and the gallery and the production model answer (a load balancer sends no traffic before).
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from starlette.requests import Request

from enroll.api.live_index import LiveGallery
from enroll.api.settings import ApiSettings
from enroll.embedders import Embedder, embedder_for
from enroll.gallery import GalleryError
from enroll.tokens import TokenStore, open_token_store
from trainer.cliargs import one_line

log = logging.getLogger("enroll.api")


@dataclass
class ApiContext:
    settings: ApiSettings
    home: Path
    gallery: LiveGallery
    tokens: TokenStore
    embedder: Embedder
    exporter: object | None = None  # serving_sync.ServingExporter: TF-Serving's gallery follows changes
    loaded: threading.Event = field(default_factory=threading.Event)
    load_error: str = ""

    def warm_up(self) -> None:
        """Load the production model and the face detector, and run each once (their first call
        traces TensorFlow graphs), so that the first real request is not the slow one."""
        from trainer.align import FaceAligner

        try:
            model = self.embedder.current(self.home)
            size = int(model.meta["image_size"])
            model.embed(np.zeros((1, size, size, 3), np.uint8))
            FaceAligner(size).align(np.full((96, 96, 3), 128, np.uint8))
            self.load_error = ""
        except Exception as exc:  # noqa: BLE001 - reported by /readyz, retried there
            self.load_error = one_line(exc)
            log.warning("not ready: %s", self.load_error)
        finally:
            self.loaded.set()

    def changed(self) -> None:
        """A person was added or removed: TF-Serving's export follows (debounced), when there is one."""
        if self.exporter is not None:
            self.exporter.notify_changed()

    def readiness(self) -> tuple[bool, dict]:
        """(ready, what /readyz answers): the production model loaded and the gallery reachable."""
        if not self.loaded.is_set():
            return False, {"error": "loading the production model and the face detector"}
        try:
            model = self.embedder.current(self.home)  # cached; loads a newly promoted version once
            gallery_version = self.gallery.gallery_version()
        except Exception as exc:  # noqa: BLE001 - any failure here means: send no traffic
            reason = one_line(exc) if isinstance(exc, GalleryError) else f"{type(exc).__name__}: {one_line(exc)}"
            return False, {"error": reason}
        return True, {"model_version": model.version, "gallery_version": gallery_version,
                      "embeddings": "served" if self.settings.embed_server else "in-process"}

    def close(self) -> None:
        for resource in (self.exporter, self.gallery, self.tokens, self.embedder):
            try:
                getattr(resource, "close", lambda: None)()
            except Exception as exc:  # noqa: BLE001 - shutting down: log and go on
                log.warning("closing %r: %s", resource, one_line(exc))


def open_context(settings: ApiSettings) -> ApiContext:
    from enroll.backends import open_gallery

    home = settings.home_path
    gallery = open_gallery(home, create=True)
    try:
        tokens = open_token_store(home)
    except BaseException:
        gallery.close()
        raise
    context = ApiContext(settings, home, LiveGallery(gallery, home), tokens, embedder_for(settings.embed_server),
                         exporter=_serving_exporter(home, gallery))
    threading.Thread(target=context.warm_up, name="warm-up", daemon=True).start()
    return context


def _serving_exporter(home: Path, gallery):
    """Re-export TF-Serving's gallery after changes (enroll/serving_sync.py), when this home is served
    at all (it has an export) and no watcher owns that ($FACENET_SERVING_SYNC=off)."""
    from enroll.home import serving_dir
    from enroll.serving_export import DEFAULT_NAME
    from enroll.serving_sync import ServingExporter

    if not (serving_dir(home) / DEFAULT_NAME).is_dir():
        return None
    return ServingExporter.from_env(home, gallery_version=gallery.gallery_version)


def context_of(request: Request) -> ApiContext:
    return request.app.state.context
