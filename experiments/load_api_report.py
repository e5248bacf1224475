"""The API load run's verdict and table (``python -m experiments.load_api``): the database after the
load against what the clients were told, the identify answers sorted by what was asked, and the
per-endpoint latencies (load_report.kind_summary, shared with the CLI load test)."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from experiments.load_api_clients import Answer, Enrolment
from experiments.load_report import GalleryState

LAG_S = 1.0  # the change feed's promise: a change made through one process is seen by every process within 1 s


@dataclass
class LoadApiRun:
    records: list[dict]  # one per client, load_report.kind_summary's shape
    enrolled: list[Enrolment]  # every enrolment answered 2xx
    answers: list[Answer]  # every identify answered 2xx
    checked: list[dict]  # after_check: {"name", "nearest", "message"}
    window_s: float

    @property
    def names(self) -> list[str]:
        return [e.identity.name for e in self.enrolled]

    def logs(self, kind: str) -> list[dict]:
        return [r for r in self.records if r["kind"] == kind]


def answer_counts(answers: list[Answer]) -> dict[str, dict[str, int]]:
    """What came back, by what was asked: right name / unknown / another name."""
    def sort(selected):
        c = Counter("right" if a.name == a.expected else "unknown" if a.name == "unknown" else "other name"
                    for a in selected)
        return {"answers": len(selected), "right": c["right"], "unknown": c["unknown"], "other_name": c["other name"]}

    known = [a for a in answers if a.expected is not None]
    return {
        "other photo of an enrolled person": sort([a for a in known if not a.same_photo]),
        f"enrolment photo, enrolment >= {LAG_S:g} s old": sort(
            [a for a in known if a.same_photo and a.since_enrolment_s >= LAG_S]),
        f"enrolment photo, enrolment < {LAG_S:g} s old": sort(
            [a for a in known if a.same_photo and a.since_enrolment_s < LAG_S]),
        "stranger (never enrolled)": sort([a for a in answers if a.expected is None]),
    }


def checks(before: GalleryState, after: GalleryState, problems: list[str], run: LoadApiRun) -> dict[str, dict]:
    """Each check's name -> {"ok", "detail"}; ``problems`` is check_consistency's answer after the load."""
    reported = run.names
    new = set(after.people) - set(before.people)
    lost, extra = sorted(set(reported) - new), sorted(new - set(reported))
    duplicated = sorted({n for n, k in Counter(reported).items() if k > 1} | {n for n in new if after.people[n] != 1})
    named = {n for a in run.answers for n in (a.name, *a.candidates)} - {"unknown"}
    strangers_named = sorted(named - set(after.people))
    strict = [a for a in run.answers if a.same_photo and a.expected and a.since_enrolment_s >= LAG_S
              and a.name != a.expected]
    unidentified = [c for c in run.checked if c["nearest"] != c["name"]]
    errors = [m for r in run.records for m in r["errors"]]
    check = lambda ok, detail: {"ok": bool(ok), "detail": "" if ok else detail}  # noqa: E731
    return {
        "no request failed (no 5xx, no dropped connection, no other refusal)": check(
            not errors, f"{len(errors)} failed: " + "; ".join(sorted(set(errors))[:3])[:500]),
        "none lost: every enrolment answered 2xx is in the database": check(not lost, f"lost {lost[:5]}"),
        "none extra: nobody in the database whose enrolment was not answered 2xx": check(not extra, f"extra {extra[:5]}"),
        "none duplicated: each enrolled once, with one face": check(not duplicated, f"duplicated {duplicated[:5]}"),
        "check_consistency(production version) == []": check(not problems, "; ".join(problems[:5])),
        "identify named only enrolled people": check(not strangers_named, f"named {strangers_named[:5]}"),
        f"an enrolment photo named its person once the enrolment was {LAG_S:g} s old": check(
            not strict, "; ".join(f"{a.expected} answered {a.name} after {a.since_enrolment_s:.2f} s" for a in strict[:3])),
        "every new person identifiable after the load (through another API process, if any)": check(
            len(run.checked) == len(reported) and not unidentified,
            f"{len(run.checked)}/{len(reported)} checked, wrong: {unidentified[:3]}"),
        "no retraining submitted, production model unchanged": check(
            after.jobs == before.jobs and after.production == before.production,
            f"jobs {before.jobs} -> {after.jobs}, production {before.production} -> {after.production}"),
    }


def table(r: dict) -> str:
    ms = lambda v: f"{v:,.0f} ms" if v is not None else "-"  # noqa: E731
    lines = [f"{r['enrollers']} enrolling + {r['identifiers']} identifying HTTP clients, {r['api_processes']} API "
             f"process(es) over {r['backend']}, {r['seconds']:g} s; {r['machine']}; model {r['model']}; gallery "
             f"{r['people_before']} -> {r['people_after']} people", "",
             "| endpoint | clients | calls | 2xx | no face (422) | errors | calls/s | p50 | p99 |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for endpoint, k in (("POST /v1/people", r["enrol"]), ("POST /v1/identify", r["identify"])):
        lines.append(f"| {endpoint} | {k['processes']} | {k['calls']} | {k['ok']} | {k['no_face']} | {k['errors']} | "
                     f"{k['ops_per_s']:.1f} | {ms(k['p50_ms'])} | {ms(k['p99_ms'])} |")
    lines += ["", "| identify asked about | answers | right name | unknown | another enrolled name |",
              "| --- | ---: | ---: | ---: | ---: |"]
    for asked, c in r["answers"].items():
        right = "-" if asked.startswith("stranger") else c["right"]
        lines.append(f"| {asked} | {c['answers']} | {right} | {c['unknown']} | {c['other_name']} |")
    lines += ["", f"start-up of {r['api_processes']} API process(es) (TensorFlow, model, detector): "
                  f"{r['startup_s']:.1f} s; load window {r['window_s']:.1f} s; after-check of {len(r['enrolled_people'])} "
                  f"people {r['after_check_s']:.1f} s; machine load average (1 min) {r['load_average_1min']['before']:.1f} "
                  f"before, {r['load_average_1min']['after_load']:.1f} at the end of the load",
              "", "| check | result |", "| --- | --- |"]
    lines += [f"| {name} | {'pass' if c['ok'] else 'FAIL: ' + c['detail']} |" for name, c in r["checks"].items()]
    return "\n".join(lines)
