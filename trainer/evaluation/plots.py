"""PNG figures for verification reports: the ROC curve and the matched/mismatched distance histograms
(the FaceNet paper's separation figure).

Figures are drawn on an explicit Agg canvas instead of through ``pyplot``, so plotting works on
headless workers and never switches the process-wide backend of a caller that uses pyplot itself.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def _save(fig: Figure, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(path, format="png", dpi=100)
    return path


def plot_roc(fpr, tpr, path, label: str = "ROC") -> Path:
    """Plot the ROC (true accept rate against false accept rate) with the chance diagonal and the
    area under the curve in the legend; returns ``path``."""
    fpr, tpr = np.asarray(fpr, dtype=float), np.asarray(tpr, dtype=float)
    auc = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))
    fig = Figure(figsize=(5, 5))
    ax = fig.add_subplot()
    ax.plot(fpr, tpr, label=f"{label} (AUC = {auc:.4f})")
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=0.8, label="chance")
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="false accept rate", ylabel="true accept rate (VAL)",
           title="ROC")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    return _save(fig, path)


def plot_distance_histogram(dist, same, path, threshold: float | None = None, bins: int = 50) -> Path:
    """Overlaid density histograms of matched ("same") and mismatched ("different") pair
    distances on shared bins, with an optional vertical line at the decision threshold (pairs at
    or below it are accepted); returns ``path``."""
    dist, same = np.asarray(dist, dtype=float).ravel(), np.asarray(same, dtype=bool).ravel()
    finite = dist[np.isfinite(dist)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    # Shared edges make the two histograms comparable bar for bar; a degenerate range gets width.
    edges = np.linspace(lo, hi if hi > lo else lo + 1.0, bins + 1)
    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot()
    for mask, name, color in ((same, "same", "tab:green"), (~same, "different", "tab:red")):
        if mask.any():
            ax.hist(dist[mask], bins=edges, density=True, alpha=0.5, color=color,
                    label=f"{name} ({int(mask.sum())} pairs)")
    if threshold is not None:
        ax.axvline(threshold, color="black", linestyle="--", label=f"threshold = {threshold:.3f}")
    ax.set(xlabel="distance", ylabel="density", title="Pair distances")
    ax.legend()
    fig.tight_layout()
    return _save(fig, path)
