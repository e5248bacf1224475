"""A TensorFlow Datasets dataset (``tfds:<name>``) as an identity folder, exported once under the cache."""
from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path


def export_tfds(name: str, cache_dir: Path, data_dir: str | None = None) -> Path:
    """Write a tfds dataset with (image, label) features to ``cache/tfds/<name>/<label>/<n>.png`` once."""
    import tensorflow as tf
    import tensorflow_datasets as tfds

    from trainer.prepare import DatasetError, _slug

    out = cache_dir / "tfds" / re.sub(r"[^\w.-]", "_", name)
    if (out / ".complete").exists():
        return out
    builder = tfds.builder(name, data_dir=data_dir)
    builder.download_and_prepare()  # the real download, for users with network access
    features = builder.info.features
    label_key = next((k for k in ("label", "identity", "person") if k in features), None)
    if "image" not in features or label_key is None:
        raise DatasetError(f"tfds dataset {name!r} has no 'image' + 'label' features: {list(features)}")
    label_names = getattr(features[label_key], "names", None)
    out.mkdir(parents=True, exist_ok=True)
    counters: Counter = Counter()
    for split in builder.info.splits:
        for example in tfds.as_numpy(builder.as_dataset(split=split)):
            label = example[label_key]
            label = label_names[label] if label_names else (label.decode() if isinstance(label, bytes) else str(label))
            # The label is the identity; only a label no folder can be named after gets a slug.
            folder = out / (label if re.fullmatch(r"[^/\\\x00]{1,200}", label) and not label.startswith(".")
                            else _slug(label))
            folder.mkdir(exist_ok=True)
            counters[label] += 1
            (folder / f"{counters[label]:05d}.png").write_bytes(tf.io.encode_png(example["image"]).numpy())
    (out / ".complete").write_text(json.dumps(dict(counters)))
    return out



