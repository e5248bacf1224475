"""The HTTP clients of the API load run (experiments/load_api.py): threads with httpx, real photos.

An enroller enrols made-up people, one identity each (``POST /v1/people``, the identity's first
photo); an identifier asks ``POST /v1/identify`` about people whose enrolment has returned (one of
their other photos, or now and then the enrolment photo itself) and now and then about a stranger
(an identity nobody enrols). Client ``i`` talks to API process ``i mod n``, so identifiers ask
replicas about people enrolled through another one. Each client keeps a record in the shape
experiments/load_report.kind_summary reads, and each identify answer as an ``Answer``.
"""
from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

STRANGER_SHARE = 0.1  # identify calls about someone never enrolled
SAME_PHOTO_SHARE = 0.25  # identify calls about an enrolled person's enrolment photo itself
TIMEOUT_S = 120


@dataclass(frozen=True)
class Identity:
    name: str  # the name it is enrolled under
    enrol_photo: Path
    query_photos: tuple[Path, ...]  # other photos of the same person


@dataclass(frozen=True)
class Enrolment:
    identity: Identity
    base: str  # the API process that enrolled them
    returned: float  # time.monotonic() when the 2xx answer arrived


@dataclass(frozen=True)
class Answer:
    """One identify answer: who was asked about, what came back."""
    expected: str | None  # the enrolled name, None for a stranger
    same_photo: bool  # the enrolment photo itself (distance ~0 when the index has them)
    since_enrolment_s: float | None  # from the enrolment's answer to this request being sent
    name: str  # "unknown" beyond τ
    candidates: tuple[str, ...]
    model_version: int | None
    base: str


@dataclass
class Outcome:
    status: int | None  # None: no HTTP answer (connection refused or reset, timeout)
    seconds: float
    body: dict = field(default_factory=dict)
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    @property
    def no_face(self) -> bool:
        return self.status == 422 and "no face" in self.message


def post(client, url: str, token: str, data: dict, files: list) -> Outcome:
    import httpx

    started = time.perf_counter()
    try:
        answer = client.post(url, data=data, files=files, headers={"Authorization": f"Bearer {token}"})
    except httpx.HTTPError as exc:
        return Outcome(None, time.perf_counter() - started, message=f"{type(exc).__name__}: {exc}"[:300])
    seconds = time.perf_counter() - started
    try:
        body = answer.json()
    except ValueError:
        body = {"error": f"not JSON: {answer.text[:200]!r}"}
    message = "" if answer.is_success else f"{answer.status_code}: {body.get('error', body)}"
    return Outcome(answer.status_code, seconds, body if isinstance(body, dict) else {}, message)


class Record:
    """One client's record, as load_report.kind_summary reads it."""

    def __init__(self, worker: str, kind: str):
        self.summary = {"worker": worker, "kind": kind, "ok": 0, "no_face": 0, "errors": [], "latencies": [],
                        "released": time.monotonic(), "finished": time.monotonic()}

    def add(self, outcome: Outcome) -> None:
        s = self.summary
        s["latencies"].append(outcome.seconds)
        if outcome.ok:
            s["ok"] += 1
        elif outcome.no_face:
            s["no_face"] += 1
        else:
            s["errors"].append(outcome.message)
        s["finished"] = time.monotonic()


def photo_file(field_name: str, path: Path) -> tuple:
    return (field_name, (path.name, path.read_bytes(), "image/jpeg"))


def enroller(i: int, base: str, token: str, identities: list[Identity], deadline: float,
             enrolled: list[Enrolment], record: Record) -> None:
    import httpx

    with httpx.Client(timeout=TIMEOUT_S) as client:
        for identity in identities:
            if time.monotonic() >= deadline:
                break
            outcome = post(client, f"{base}/v1/people", token, {"name": identity.name, "allow_several_faces": "true"},
                           [photo_file("photos", identity.enrol_photo)])
            record.add(outcome)
            if outcome.ok:
                enrolled.append(Enrolment(identity, base, time.monotonic()))  # identifiers may ask from now on
        record.summary["identities_left"] = len(identities) - len(record.summary["latencies"])


def identifier(i: int, base: str, token: str, strangers: list[Identity], deadline: float,
               enrolled: list[Enrolment], record: Record, answers: list[Answer]) -> None:
    import httpx

    rng = random.Random(i)
    with httpx.Client(timeout=TIMEOUT_S) as client:
        while time.monotonic() < deadline:
            if enrolled and rng.random() >= STRANGER_SHARE:
                enrolment = enrolled[rng.randrange(len(enrolled))]
                identity = enrolment.identity
                same = rng.random() < SAME_PHOTO_SHARE or not identity.query_photos
                photo = identity.enrol_photo if same else rng.choice(identity.query_photos)
                expected, since = identity.name, time.monotonic() - enrolment.returned
            else:
                photo, expected, same, since = rng.choice(rng.choice(strangers).query_photos), None, False, None
            outcome = post(client, f"{base}/v1/identify", token, {"top_k": "3"}, [photo_file("photo", photo)])
            record.add(outcome)
            if outcome.ok:
                body = outcome.body
                answers.append(Answer(expected, same, since, body["name"],
                                      tuple(c["name"] for c in body["candidates"]), body.get("model_version"), base))


def run_clients(bases: list[str], token: str, to_enrol: list[Identity], strangers: list[Identity],
                enrollers: int, identifiers: int, seconds: float):
    """Every client started together and stopped at the deadline; (records, enrolled, answers, window)."""
    enrolled: list[Enrolment] = []  # appended by enrollers; list.append is atomic
    answers: list[Answer] = []
    records, threads = [], []
    deadline = time.monotonic() + seconds
    for i in range(enrollers):
        record = Record(f"e{i}", "enrol")
        records.append(record)
        threads.append(threading.Thread(target=enroller, name=f"e{i}", args=(
            i, bases[i % len(bases)], token, to_enrol[i::enrollers], deadline, enrolled, record)))
    for i in range(identifiers):
        record = Record(f"i{i}", "identify")
        records.append(record)
        threads.append(threading.Thread(target=identifier, name=f"i{i}", args=(
            i, bases[(i + 1) % len(bases)], token, strangers, deadline, enrolled, record, answers)))
    started = time.monotonic()
    for record in records:
        record.summary["released"] = started
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    window = max(r.summary["finished"] for r in records) - started
    return [r.summary for r in records], enrolled, answers, window


def after_check(bases: list[str], token: str, enrolled: list[Enrolment], threads: int) -> list[dict]:
    """Each enrolled person's enrolment photo, asked of another API process than the one that
    enrolled them, once the load is over: the nearest must be them."""
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    def check(enrolment: Enrolment) -> dict:
        other = bases[(bases.index(enrolment.base) + 1) % len(bases)]
        with httpx.Client(timeout=TIMEOUT_S) as client:
            outcome = post(client, f"{other}/v1/identify", token, {"top_k": "1"},
                           [photo_file("photo", enrolment.identity.enrol_photo)])
        candidates = outcome.body.get("candidates") or [{}] if outcome.ok else [{}]
        nearest = candidates[0].get("name")
        return {"name": enrolment.identity.name, "nearest": nearest, "message": outcome.message}

    with ThreadPoolExecutor(max(1, threads)) as pool:
        return list(pool.map(check, enrolled))
