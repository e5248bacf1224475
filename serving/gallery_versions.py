"""Gallery-only TF-Serving versions: a new version written without serialising the network again.

``tf.saved_model.save`` rebuilds the whole MetaGraph on every call: it re-traces the checkpoint's
save/restore functions and serialises every function graph, about 1.4 s for nn4_small2 on this
2-core machine, although two exports of the same traced ``FaceNetServing`` differ only in the
gallery variables (gallery, people, τ, top_k, metadata: ``serving.module.GALLERY_ATTRIBUTES``).
``NetworkTemplate`` is taken from one full export and then writes each further version directly:

    saved_model.pb                              the full export's bytes, as they were
    variables/variables.data-00000-of-00002     the network's weights: a hard link to the previous
                                                version's network shard (no bytes written), or
                                                written once (``SaveV2``) when there is none
    variables/variables.data-00001-of-00002     the gallery variables and the object graph
    variables/variables.index                   both shards' index (``MergeV2Checkpoints``)
    fingerprint.pb                              recomputed for these files

The graph does not depend on the gallery: the gallery variables have a dynamic first dimension
and the traced functions capture variables, not values. TF-Serving's loader and
``tf.saved_model.load`` find tensors through the checkpoint index, whatever the number of shards,
so such a version loads like a full one (tests/test_gallery_versions.py checks both loaders).
Hard links share bytes, never the gallery: deleting a version (remove-person, pruning) removes its
gallery shard, and the network shard lives on in the versions that link it.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from serving.module import GALLERY_ATTRIBUTES, checkpoint_key

OBJECT_GRAPH_KEY = "_CHECKPOINTABLE_OBJECT_GRAPH"  # tf.train's key for the checkpoint's object graph


@dataclass
class NetworkTemplate:
    """What a gallery-only version shares with the full export it was taken from."""

    saved_model_pb: bytes
    object_graph: bytes
    network_keys: list[str]
    network_values: list[np.ndarray]  # written once per process at most (when no shard is left to link)
    network_index: bytes = b""  # the network shard's own index, once written
    network_bytes: int = 0  # and its size
    last_shard: tuple[Path, int] | None = None  # (path, inode) of the newest published network shard

    @classmethod
    def from_export(cls, directory: Path) -> "NetworkTemplate":
        """Read a full export of a ``FaceNetServing`` (as ``tf.saved_model.save`` wrote it)."""
        import tensorflow as tf

        reader = tf.train.load_checkpoint(str(Path(directory) / "variables" / "variables"))
        keys = set(reader.get_variable_to_shape_map())
        gallery = {checkpoint_key(a) for a in GALLERY_ATTRIBUTES}
        if not gallery | {OBJECT_GRAPH_KEY} <= keys:
            raise ValueError(f"{directory} is not a FaceNetServing export: missing {sorted(gallery - keys)}")
        network = sorted(keys - gallery - {OBJECT_GRAPH_KEY})
        return cls(saved_model_pb=(Path(directory) / "saved_model.pb").read_bytes(),
                   object_graph=reader.get_tensor(OBJECT_GRAPH_KEY), network_keys=network,
                   network_values=[reader.get_tensor(k) for k in network])

    # ------------------------------------------------------------------ writing a version
    def write_version(self, directory: Path, module) -> int:
        """Fill ``directory`` with a SavedModel of ``module``'s current gallery variables; returns
        the network shard's inode, for ``published`` once the directory is renamed into place."""
        import tensorflow as tf

        directory = Path(directory)
        variables = directory / "variables"
        variables.mkdir(parents=True)
        (directory / "saved_model.pb").write_bytes(self.saved_model_pb)
        network_prefix, gallery_prefix = variables / "network", variables / "gallery"
        inode = self._network_shard(network_prefix)
        names = sorted(checkpoint_key(a) for a in GALLERY_ATTRIBUTES)
        values = {checkpoint_key(a): getattr(module, a).read_value() for a in GALLERY_ATTRIBUTES}
        values[OBJECT_GRAPH_KEY] = tf.constant(self.object_graph)
        names.append(OBJECT_GRAPH_KEY)
        tf.raw_ops.SaveV2(prefix=str(gallery_prefix), tensor_names=names, shape_and_slices=[""] * len(names),
                          tensors=[values[n] for n in names])
        tf.raw_ops.MergeV2Checkpoints(checkpoint_prefixes=[str(network_prefix), str(gallery_prefix)],
                                      destination_prefix=str(variables / "variables"), delete_old_dirs=False)
        _write_fingerprint(directory)
        return inode

    def published(self, version_dir: Path, inode: int) -> None:
        """Record the network shard of ``version_dir``, written by ``write_version`` (which returned
        ``inode``) and now published: the file the next version links to."""
        for shard in (Path(version_dir) / "variables").glob("variables.data-*"):
            if shard.stat().st_ino == inode:
                self.last_shard = (shard, inode)
                return
        self.last_shard = None

    def _network_shard(self, prefix: Path) -> int:
        """A one-shard checkpoint of the network at ``prefix``: linked when possible; its inode."""
        import tensorflow as tf

        data, index = Path(f"{prefix}.data-00000-of-00001"), Path(f"{prefix}.index")
        if self._link_previous(data):
            index.write_bytes(self.network_index)
        else:
            tf.raw_ops.SaveV2(prefix=str(prefix), tensor_names=self.network_keys,
                              shape_and_slices=[""] * len(self.network_keys),
                              tensors=[tf.constant(v) for v in self.network_values])
            self.network_index = index.read_bytes()
            self.network_bytes = data.stat().st_size
        return data.stat().st_ino

    def _link_previous(self, data: Path) -> bool:
        """Hard-link the newest version's network shard, if it is still the one written here."""
        if self.last_shard is None or not self.network_index:
            return False
        source, inode = self.last_shard
        try:
            if source.stat().st_ino != inode or source.stat().st_size != self.network_bytes:
                return False  # deleted (remove-person, pruning) or replaced
            os.link(source, data)
        except OSError:  # gone, or a file system without hard links: write the bytes instead
            return False
        return True


def _write_fingerprint(directory: Path) -> None:
    """``fingerprint.pb`` as ``tf.saved_model.save`` writes it (hashes of these very files)."""
    try:
        from tensorflow.python.saved_model.pywrap_saved_model import fingerprinting
    except ImportError:  # an older or newer TensorFlow without it: loaders do not require the file
        return
    (directory / "fingerprint.pb").write_bytes(fingerprinting.CreateFingerprintDef(str(directory)))
