"""enroll.model_versions.embed_pixels: eager on a process's first call, a traced graph after, same vectors."""
import numpy as np

import enroll  # noqa: F401  (tf-keras before TensorFlow)


def test_the_first_call_is_eager_the_next_ones_a_graph_with_the_same_vectors():
    from enroll.model_versions import _FORWARD, embed_pixels
    from trainer.models import build_model

    model = build_model("tiny", 128, 64)
    crops = np.random.default_rng(0).integers(0, 256, (5, 64, 64, 3), dtype=np.uint8)
    first = embed_pixels(model, crops)
    assert _FORWARD[model] is None, "one photo, one call: nothing traced"
    second = embed_pixels(model, crops[:2], batch_size=1)
    graph = _FORWARD[model]
    assert hasattr(graph, "get_concrete_function"), "the second call runs a tf.function"
    third = embed_pixels(model, crops)
    assert graph.experimental_get_tracing_count() == 1, "batch sizes share one trace"
    np.testing.assert_allclose(second, first[:2], atol=1e-5)
    np.testing.assert_allclose(third, first, atol=1e-5)
    assert first.shape == (5, 128) and np.allclose(np.linalg.norm(first, axis=1), 1.0, atol=1e-5)
    assert embed_pixels(model, crops[:0]).shape == (0, 128)
