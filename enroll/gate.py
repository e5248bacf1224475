"""The promotion gate: is the retrained candidate at least as good as production where users feel it?

The production model and the candidate are measured alike, each with its own τ calibrated at the
home's FAR (``far_target``, enroll/settings.py):

    old_accuracy        verification accuracy on the base data's held-out identities (test split, else val)
    changed_identified  changed people's unseen photos named correctly with distance <= τ
    changed_rank1       changed people's unseen photos whose nearest enrolled person is right, any distance
    strangers_rejected  photos of the base data's held-out identities (never enrolled) answered unknown at τ
    oneshot_identified  the same held-out identities enrolled one-shot (first photo), their other photos
                        named correctly within τ: what a user enrolling new people one-shot feels
    oneshot_rank1       ... and whose nearest enrolled person is right, any distance

The one-shot figures matter most when the changed people were themselves enrolled from one photo:
their own figures are then measured on augmented copies of it, which a candidate can pass while
getting worse on every real photo (a promoted warm start once took enrolled people named within τ
from 0.30 to 0.19 on their real photos). The held-out identities have many real photos, none
trained on by either model, so both models are compared on the same real one-shot enrolments.

Changed people's photos and the galleries are described in enroll/probes.py; their figures are
means over the changed people (each person counts once, however many probes they have). The
candidate is rejected when any figure falls by more than its tolerance (``promotion_max_drop``,
``promotion_max_identified_drop``, ``promotion_max_rank1_drop``, ``promotion_max_stranger_drop``)
or its changed people's rank-1 is below ``promotion_min_new_rank1``, and, unless
``promotion_evidence_p`` is 1, when it shows no evidence of being better on the held-out one-shot
photos (a paired test, enroll/gate_evidence.py). The figures are stored with
the job (``Job.result["gate"]``), shown by ``enroll status`` and logged to the retraining run's
MLflow run as ``gate/<figure>_production`` and ``gate/<figure>_candidate``.
"""
from __future__ import annotations

import sys
import time

import numpy as np

from trainer.run_plan import RunPlan

# figure -> (what it is, in words; the setting holding how much it may fall)
FIGURES = {
    "old_accuracy": ("old identities' verification accuracy", "promotion_max_drop"),
    "changed_identified": ("changed people named within τ", "promotion_max_identified_drop"),
    "changed_rank1": ("changed people's rank-1", "promotion_max_rank1_drop"),
    "strangers_rejected": ("strangers rejected at τ", "promotion_max_stranger_drop"),
    "oneshot_identified": ("held-out people enrolled one-shot, named within τ", "promotion_max_oneshot_identified_drop"),
    "oneshot_rank1": ("held-out people enrolled one-shot, rank-1", "promotion_max_oneshot_rank1_drop"),
}


def model_figures(model, threshold: float, faces, strangers, verification_args) -> tuple[dict, np.ndarray]:
    """The figures of one model, and per held-out one-shot photo whether it was named right within τ
    (for the paired test): ``faces`` from probes.gate_faces, ``strangers`` an ``ordered_images``
    dataset of the held-out identities, ``verification_args`` (folds, pairs, FAR)."""
    from enroll.gate_evidence import one_shot_answers
    from enroll.model_versions import embed_pixels
    from trainer.evaluate import embed, verification

    embeddings, identities, sources = embed(model, strangers)
    figures = {"old_accuracy": float(verification(embeddings, identities, sources, *verification_args)[0]["accuracy"])}
    right, distance = one_shot_answers(embeddings, identities)  # one search serves both one-shot figures
    named = right & (distance <= threshold)
    figures["oneshot_identified"] = float(named.mean()) if len(named) else None
    figures["oneshot_rank1"] = float(right.mean()) if len(right) else None
    _, distance = _nearest(embed_pixels(model, faces.everyone.pixels), embeddings)
    figures["strangers_rejected"] = float(np.mean(distance > threshold)) if len(distance) else None
    figures["changed_identified"] = figures["changed_rank1"] = None
    if len(faces.probes) and len(faces.gallery):
        index, distance = _nearest(embed_pixels(model, faces.gallery.pixels), embed_pixels(model, faces.probes.pixels))
        nearest = np.array(faces.gallery.names, dtype=object)[index]
        right = nearest == np.array(faces.probes.names, dtype=object)
        figures["changed_rank1"] = _per_person(faces.probes.names, right)
        figures["changed_identified"] = _per_person(faces.probes.names, right & (distance <= threshold))
    return figures, named


def _nearest(gallery: np.ndarray, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(row, distance) of each query's nearest gallery vector; no gallery: nobody is near (inf)."""
    from trainer.evaluation.identification import nearest_neighbours

    if not len(gallery):
        return np.zeros(len(queries), np.int64), np.full(len(queries), np.inf)
    return nearest_neighbours(gallery, queries)


def _per_person(names: list[str], hits: np.ndarray) -> float:
    labels = np.array(names, dtype=object)
    return float(np.mean([hits[labels == name].mean() for name in sorted(set(names))]))


def compare(production: dict, candidate: dict, settings) -> tuple[dict, list[str]]:
    """{figure: {production, candidate, max_drop}} and the reasons to reject (none: it passes)."""
    figures, reasons = {}, []
    for name, (label, setting) in FIGURES.items():
        before, after, allowed = production[name], candidate[name], getattr(settings, setting)
        figures[name] = {"production": before, "candidate": after, "max_drop": allowed}
        if before is not None and after is not None and before - after > allowed:
            reasons.append(f"{label} {before:.3f} -> {after:.3f}: a drop of {before - after:.3f} > "
                           f"{setting}={allowed:g}")
    floor, rank1 = settings.promotion_min_new_rank1, candidate["changed_rank1"]
    if rank1 is not None and rank1 < floor:
        reasons.append(f"changed people's rank-1 {rank1:.3f} < promotion_min_new_rank1={floor:g}")
    return figures, reasons


def promotion_gate(production_model, production_meta: dict, candidate, plan: RunPlan, cfg, settings, gallery,
                   changed: list[str]) -> dict:
    """Measure both models on the same photos, each at its own τ for the home's FAR, and compare."""
    from enroll.gate_evidence import mcnemar_gain, verdict
    from enroll.model_versions import calibrate
    from enroll.probes import gate_faces
    from trainer import pipeline

    far = settings.far_target
    split = "test" if plan.shards.test else "val"
    strangers = pipeline.ordered_images(getattr(plan.shards, split), plan.image_size, cfg.eval.eval_batch_size)
    faces = gate_faces(gallery, changed, plan.image_size)
    same_far = production_meta.get("far_target") == far and "threshold" in production_meta
    thresholds = {"production": float(production_meta["threshold"]) if same_far else
                  calibrate(production_model, cfg, plan, far)["threshold"],
                  "candidate": calibrate(candidate, cfg, plan, far)["threshold"]}
    verification_args = (cfg.eval.folds, cfg.eval.pairs_per_fold, cfg.eval.far_target, 0)
    measured = {which: model_figures(model, thresholds[which], faces, strangers, verification_args)
                for which, model in (("production", production_model), ("candidate", candidate))}
    figures, reasons = compare(measured["production"][0], measured["candidate"][0], settings)
    named = (measured["production"][1], measured["candidate"][1])
    evidence = mcnemar_gain(*named) if len(named[0]) else None
    reasons += [why] if (why := verdict(evidence, settings.promotion_evidence_p)) else []
    return {"passed": not reasons, "reasons": reasons, "figures": figures, "far_target": far,
            "evidence": {**(evidence.as_dict() if evidence else {}), "required_p": settings.promotion_evidence_p},
            "thresholds": thresholds, "split": split, "changed_people": len(changed),
            "probes": {"held_out": faces.held_out_probes, "augmented": faces.augmented_probes},
            "enrolled_faces": len(faces.everyone)}


def log_to_mlflow(plan: RunPlan, gate: dict) -> None:
    """``gate/<figure>_production`` and ``gate/<figure>_candidate`` (and τ, passed) on the run's MLflow run."""
    if not plan.mlflow_run_id:
        return
    try:
        from mlflow.entities import Metric
        from mlflow.tracking import MlflowClient

        now = int(time.time() * 1000)
        values = {f"gate/{name}_{which}": figure[which] for name, figure in gate["figures"].items()
                  for which in ("production", "candidate")}
        values.update({f"gate/threshold_{which}": tau for which, tau in gate["thresholds"].items()})
        values["gate/passed"] = float(gate["passed"])
        values["gate/evidence_p"] = (gate.get("evidence") or {}).get("p_value")
        MlflowClient(plan.tracking_uri).log_batch(plan.mlflow_run_id, metrics=[
            Metric(key, float(value), now, 0) for key, value in values.items() if value is not None])
    except Exception as exc:  # noqa: BLE001 - the figures are stored with the job anyway
        print(f"warning: could not log the gate's figures to MLflow: {exc}", file=sys.stderr)


def describe(gate: dict) -> list[str]:
    """The gate's figures, one line each, production -> candidate (for `enroll status`)."""
    lines = [f"gate {'passed' if gate.get('passed') else 'rejected'} at FAR {gate.get('far_target', 0):g} "
             f"(τ {gate['thresholds']['production']:.4f} -> {gate['thresholds']['candidate']:.4f}; "
             f"changed people: {gate['changed_people']}, judged on {gate['probes']['held_out']} held-out and "
             f"{gate['probes']['augmented']} augmented photos)"]
    for name, (label, setting) in FIGURES.items():
        figure = gate["figures"].get(name) or {}
        if figure.get("production") is None or figure.get("candidate") is None:
            lines.append(f"{label}: not measured (nobody to measure it on)")
            continue
        lines.append(f"{label}: {figure['production']:.3f} -> {figure['candidate']:.3f} "
                     f"(may fall by {figure['max_drop']:g})")
    evidence = gate.get("evidence") or {}
    if "p_value" in evidence:
        lines.append(f"evidence it is better (held-out one-shot photos, paired): {evidence['gained']} gained, "
                     f"{evidence['lost']} lost of {evidence['photos']}, p {evidence['p_value']:.3f} "
                     f"(needs <= {evidence['required_p']:g})")
    return lines
