"""``enroll status``: the production model, the home's FAR, the gallery, class changes and jobs,
with each retraining job's promotion-gate figures (production -> candidate), as JSON and as text."""
from __future__ import annotations

from pathlib import Path


def status_report(home: Path, gallery) -> tuple[dict, list[str]]:
    """(JSON document, text lines); ``gallery`` is the home's (or an empty stand-in)."""
    from enroll.gallery import GalleryError
    from enroll.gate import describe
    from enroll.model_versions import ModelError, production_meta
    from enroll.settings import load_settings

    try:
        version, meta = production_meta(home)
    except ModelError as exc:
        version, meta = None, {"problem": str(exc)}
    try:
        policy_far, policy_problem = load_settings(home).far_target, ""
    except GalleryError as exc:  # status still answers; the policy's problem is part of the answer
        policy_far, policy_problem = None, str(exc)
    if any(j.state in ("submitted", "running") for j in gallery.jobs()):
        from enroll.retrain import reconcile

        reconcile(home, gallery)
    people = gallery.list_people()
    changes = gallery.changes_since(meta.get("gallery_version", 0)) if version else []
    jobs = gallery.jobs()
    status = {"home": str(home), "production_version": version, "threshold": meta.get("threshold"),
              "threshold_method": meta.get("threshold_method"), "far_target": meta.get("far_target"),
              "policy_far_target": policy_far, "people": len(people),
              "faces": sum(k for _, k in people), "source_run": meta.get("source_run"),
              "class_changes_since_production": [{"seq": c.seq, "kind": c.kind, "name": c.name or None} for c in changes],
              "jobs": [{"id": j.id, "kind": j.kind, "state": j.state, "detail": j.detail,
                        "gate": j.result.get("gate")} for j in jobs]}
    kinds = {k: sum(c.kind == k for c in changes) for k in ("add", "append", "remove")}
    lines = [f"home: {home}",
             f"production model: version {version}, τ {meta['threshold']:.4f} ({meta['threshold_method']} at FAR "
             f"{meta.get('far_target', float('nan')):g}), from {meta.get('source_run')}" if version
             else f"production model: none ({meta['problem']})",
             f"gallery: {_n(status['people'], 'person', 'people')}, {_n(status['faces'], 'face')}",
             f"class changes since the production model: {len(changes)} "
             f"({', '.join(f'{n} {k}' for k, n in kinds.items())})",
             f"jobs: {len(jobs)}"]
    for job in jobs:
        lines.append(f"  #{job.id} {job.kind}: {job.state}" + (f" ({job.detail})" if job.detail else ""))
        if job.result.get("gate"):
            lines += [f"      {line}" for line in describe(job.result["gate"])]
    if policy_problem:
        lines.append(f"warning: {policy_problem}")
    elif version and meta.get("far_target") is not None and meta["far_target"] != policy_far:
        lines.append(f"note: enroll.yaml's far_target {policy_far:g} differs from the production model's FAR "
                     f"{meta['far_target']:g}: the next promotion calibrates τ at {policy_far:g}")
    return status, lines


def _n(count: int, one: str, many: str = "") -> str:
    return f"{count} {one if count == 1 else many or one + 's'}"
