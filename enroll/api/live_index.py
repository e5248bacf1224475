"""The API's gallery: the gallery itself, plus a search index that is never stale.

identify would otherwise read every vector from the database and build an index on every request.
``LiveGallery`` hands ``service.search_index`` the index of enroll/change_feed.py's ``SyncedIndex``
instead: kept in memory, brought up to date (extended by the new faces, or rebuilt after a
removal) by the first search after any add, append or remove made by any process or replica
(PostgreSQL: LISTEN/NOTIFY; SQLite: a ``gallery_version()`` check before each search), so an
enrolment or removal is seen by the very next identify. Everything else is the
wrapped gallery's.
"""
from __future__ import annotations

from enroll.change_feed import SyncedIndex


class LiveGallery:
    def __init__(self, gallery, home):
        from enroll.model_versions import production_version

        self.gallery = gallery
        self.synced = SyncedIndex(gallery, lambda: production_version(home))

    def __getattr__(self, name):
        return getattr(self.gallery, name)

    def search_index(self, model_version: int):
        return self.synced.current(model_version).index

    def close(self) -> None:
        self.synced.close()
        self.gallery.close()
