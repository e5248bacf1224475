"""Evaluation: pure numpy metrics on embeddings and pair distances, no TensorFlow.

``lfw_protocol`` reads/writes LFW ``pairs.txt`` and computes the 10-fold accuracy, VAL@FAR, ROC,
AUC and EER; ``pairs`` builds LFW-style pairs for any identity-folder split; ``identification``
scores closed- and open-set identification against a gallery; ``plots`` draws the ROC and the
distance histograms. Each evaluator has a generator (``evaluate_*``) yielding ``(name, value)``.
Plotting imports matplotlib, so it is not re-exported here.
"""
from trainer.evaluation.identification import (OpenSetResult, evaluate_identification,
                                               nearest_neighbours, open_set, rank1_accuracy)
from trainer.evaluation.lfw_protocol import (KFoldAccuracy, Pair, ValAtFar, best_threshold,
                                             calculate_val_far, equal_error_rate, evaluate_pairs,
                                             kfold_accuracy, read_pairs, roc, roc_auc, threshold_at_far,
                                             val_at_far, write_pairs)

_PAIRS_API = {"identity_folders", "make_pairs", "resolve_pair_paths"}


def __getattr__(name):
    # ``pairs`` is also a script (``python -m trainer.evaluation.pairs``); importing it here eagerly
    # would make runpy warn that the module was imported before being run as __main__.
    if name in _PAIRS_API:
        from trainer.evaluation import pairs
        return getattr(pairs, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "KFoldAccuracy", "OpenSetResult", "Pair", "ValAtFar", "best_threshold", "calculate_val_far",
    "equal_error_rate", "evaluate_identification", "evaluate_pairs", "identity_folders", "kfold_accuracy",
    "make_pairs", "nearest_neighbours", "open_set", "rank1_accuracy", "read_pairs", "resolve_pair_paths",
    "roc", "roc_auc", "threshold_at_far", "val_at_far", "write_pairs",
]
