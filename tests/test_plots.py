"""Report figures are written as real, non-empty PNG files."""
import numpy as np

from trainer.evaluation.lfw_protocol import roc
from trainer.evaluation.plots import plot_distance_histogram, plot_roc

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def sample():
    rng = np.random.default_rng(0)
    same = rng.random(200) < 0.5
    return rng.normal(np.where(same, 0.8, 1.3), 0.2), same


def test_plot_roc_writes_png(tmp_path):
    fpr, tpr, _ = roc(*sample())
    path = plot_roc(fpr, tpr, tmp_path / "figs" / "roc.png", label="nn4_small2")
    assert path == tmp_path / "figs" / "roc.png"
    assert path.read_bytes()[:8] == PNG_MAGIC and path.stat().st_size > 5000


def test_plot_distance_histogram_writes_png(tmp_path):
    dist, same = sample()
    path = plot_distance_histogram(dist, same, tmp_path / "hist.png", threshold=1.05)
    assert path.read_bytes()[:8] == PNG_MAGIC and path.stat().st_size > 5000


def test_histogram_handles_one_class_and_constant_distances(tmp_path):
    path = plot_distance_histogram(np.ones(5), np.ones(5, bool), str(tmp_path / "flat.png"))
    assert path.read_bytes()[:8] == PNG_MAGIC
