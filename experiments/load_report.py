"""The enrolment load test's verdict and report (``python -m experiments.load_enroll``): the checks
run on the gallery after the load, per-operation summaries of the workers' records, the Markdown table."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass


@dataclass
class GalleryState:
    people: dict[str, int]  # name -> number of faces
    jobs: int  # retraining jobs ever submitted
    production: int | None  # the production model's version


@dataclass
class LoadRun:
    """What the workers reported: one record each from the load (``logs``: add-person and identify),
    one from each identifier's after-check (``verify_logs``); times are time.monotonic()."""
    spawned: float
    released: float  # the barrier: every worker warm, the load window starts
    logs: list[dict]
    verify_logs: list[dict]
    verify_s: float
    load_after: float  # the machine's 1-minute load average at the end of the load
    crashes: list[str]

    @property
    def adder_logs(self) -> list[dict]:
        return [r for r in self.logs if r["kind"] == "add-person"]

    @property
    def identify_logs(self) -> list[dict]:
        return [r for r in self.logs if r["kind"] == "identify"]

    @property
    def new_people(self) -> list[tuple[str, str]]:
        """(name, photo) of everyone add-person reported enrolled."""
        return [tuple(pair) for r in self.adder_logs for pair in r.get("enrolled", [])]

    @property
    def reported(self) -> list[str]:
        return [name for name, _ in self.new_people]

    @property
    def checked(self) -> list[dict]:
        return [c for r in self.verify_logs for c in r.get("checked", [])]

    @property
    def window(self) -> float:
        """From the release to the last call's end."""
        return max((s["finished"] for s in self.logs if s.get("finished")), default=self.released) - self.released


def load_checks(before: GalleryState, after: GalleryState, problems: list[str], run: LoadRun,
                workers: int, identifiers: int) -> dict[str, dict]:
    """Each check's name -> {"ok", "detail"}; ``problems`` is check_consistency's answer after the load."""
    reported, checked, logs = run.reported, run.checked, run.logs
    new = set(after.people) - set(before.people)
    lost, extra = set(reported) - new, new - set(reported)
    duplicated = sorted({x for x, k in Counter(reported).items() if k > 1} |
                        {name for name in new if after.people[name] != 1})
    unidentified = [c for c in checked if c["nearest"] != c["name"]]
    wrong = [w for s in run.identify_logs for w in s.get("wrong", [])]
    check = lambda ok, detail: {"ok": bool(ok), "detail": "" if ok else detail}  # noqa: E731
    return {
        "all processes ran to the end": check(
            not run.crashes and len(logs) == workers and len(run.verify_logs) == identifiers,
            "; ".join(c.splitlines()[-1] for c in run.crashes) or f"{len(logs)}/{workers} reported"),
        "no add-person or identify error": check(not any(s["errors"] for s in logs),
                                                 "; ".join(m for s in logs for m in s["errors"][:3])[:500]),
        "people after == before + reported, each once with one face": check(
            not lost and not extra and not duplicated and set(before.people) <= set(after.people),
            f"lost {sorted(lost)[:5]}, extra {sorted(extra)[:5]}, duplicated {duplicated[:5]}"),
        "check_consistency(production version) == []": check(not problems, "; ".join(problems[:5])),
        "every new person identifiable after the load": check(
            len(checked) == len(run.new_people) and not unidentified,
            f"{len(checked)}/{len(run.new_people)} checked, wrong: {unidentified[:3]}"),
        "identify during the load named each enrolled person asked about": check(not wrong, "; ".join(wrong[:3])),
        "no retraining submitted, production model unchanged": check(
            after.jobs == before.jobs and after.production == before.production,
            f"jobs {before.jobs} -> {after.jobs}, production {before.production} -> {after.production}"),
    }


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def kind_summary(logs: list[dict], window: float) -> dict:
    latencies = [x for s in logs for x in s["latencies"]]
    per_process = [{"worker": s["worker"], "calls": len(s["latencies"]), "ok": s["ok"], "no_face": s["no_face"],
                    "errors": len(s["errors"]),
                    "ops_per_s": len(s["latencies"]) / max(s["finished"] - s["released"], 1e-9) if s["latencies"] else 0.0}
                   for s in logs]
    errors: dict[str, int] = {}
    for s in logs:
        for message in s["errors"]:
            errors[message] = errors.get(message, 0) + 1
    return {"processes": len(logs), "calls": len(latencies), "ok": sum(s["ok"] for s in logs),
            "no_face": sum(s["no_face"] for s in logs), "errors": sum(errors.values()),
            "error_messages": [{"message": m, "count": n} for m, n in sorted(errors.items(), key=lambda e: -e[1])],
            "ops_per_s": len(latencies) / window if window else 0.0,
            "ok_per_s": sum(s["ok"] for s in logs) / window if window else 0.0,
            "ops_per_s_per_process_mean": sum(p["ops_per_s"] for p in per_process) / max(len(per_process), 1),
            "p50_ms": 1000 * percentile(latencies, 50) if latencies else None,
            "p95_ms": 1000 * percentile(latencies, 95) if latencies else None,
            "p99_ms": 1000 * percentile(latencies, 99) if latencies else None,
            "per_process": per_process}


def table(r: dict) -> str:
    ms = lambda v: f"{v:.0f} ms" if v is not None else "-"  # noqa: E731
    lines = [f"{r['adders']} add-person + {r['identifiers']} identify processes, {r['seconds']:g} s, "
             f"{r['machine']}; model {r['model']}; gallery {r['people_before']} -> {r['people_after']} people", "",
             "| operation | processes | calls | ok | no face | errors | ops/s (all) | ops/s per process | p50 | p95 |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for kind in ("add_person", "identify"):
        k = r[kind]
        lines.append(f"| {kind.replace('_', '-')} | {k['processes']} | {k['calls']} | {k['ok']} | {k['no_face']} | "
                     f"{k['errors']} | {k['ops_per_s']:.1f} | {k['ops_per_s_per_process_mean']:.2f} | "
                     f"{ms(k['p50_ms'])} | {ms(k['p95_ms'])} |")
    lines += ["", f"start-up of {r['adders'] + r['identifiers']} processes (import, model, detector, first call): "
                  f"{r['startup_s']:.1f} s; load window {r['window_s']:.1f} s; after-check of "
                  f"{r['add_person']['ok']} people {r['verify_s']:.1f} s; machine load average (1 min) "
                  f"{r['load_average_1min']['before']:.1f} before, {r['load_average_1min']['after_load']:.1f} "
                  "at the end of the load", "", "| check | result |", "| --- | --- |"]
    lines += [f"| {name} | {'pass' if c['ok'] else 'FAIL: ' + c['detail']} |" for name, c in r["checks"].items()]
    return "\n".join(lines)
