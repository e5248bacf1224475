"""Bad input over HTTP, fuzzed (hypothesis), against a real ``enroll serve`` on a SQLite home; and the
short load run on it (SQLite, one API process: the SQLite half of experiments/load_api.py).

Properties, each sent to the running server through httpx:
1. malformed multipart: random bytes, a valid form truncated or bit-flipped, wrong or missing
   boundaries and content types, to add-person, identify and verify;
2. huge bodies: over the body limit with or without a Content-Length (chunked), a photo over the
   photo limit, more photos than allowed;
3. wrong and malformed tokens: other schemes, random secrets, a real token altered, a token
   without the scope, long and odd header values;
4. odd names: unicode, control and format characters, whitespace, path-like, very long: enrolled
   and found again by name, then removed, or refused.

Every answer: below 500, JSON, an ``error`` of one line for a refusal, never a traceback (nor one
in the server's log); a refusal stores nothing (people, faces, the change log as before). The
server runs with small limits (1 MiB body, 256 KiB photo, 3 photos) so that huge bodies stay cheap.
``FUZZ_EXAMPLES=N`` runs N examples per property instead of the default budget (as tests/test_fuzz.py).
"""
import os
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from tests.api_server import model_home

MAX_BODY, MAX_PHOTO, MAX_PHOTOS = 2**20, 2**18, 3
DEFAULT_BUDGET = 30  # examples per property: the module runs in about a minute on 2 cores
BOUNDARY = "fuzz-boundary-7d1e"


def fuzz():
    return settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES") or DEFAULT_BUDGET), deadline=None,
                    derandomize=True, database=None, print_blob=False,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                           HealthCheck.data_too_large, HealthCheck.filter_too_much])


@pytest.fixture(scope="module")
def served(tmp_path_factory, shared_data):
    from experiments.api_deployment import api_deployment

    template = tmp_path_factory.mktemp("fuzz-api") / "home"
    template.mkdir()
    model_home(template)
    flags = ("--max-body-bytes", str(MAX_BODY), "--max-photo-bytes", str(MAX_PHOTO), "--max-photos", str(MAX_PHOTOS))
    with api_deployment(template, "sqlite", processes=1, flags=flags) as d:
        d.client = httpx.Client(base_url=d.bases[0], timeout=120)
        d.photo = (shared_data / "lfw_mini/Colin_Powell/Colin_Powell_0001.jpg").read_bytes()
        yield d
        d.client.close()
        log = d.servers[0].log.read_text(errors="replace")
        assert "Traceback" not in log and "unexpected error" not in log, log[-3000:]


def state(d):
    with d.gallery() as g:
        return g.list_people(), g.gallery_version()


def auth(d, token=None) -> dict:
    return {"Authorization": f"Bearer {token or d.token}"}


def check_answer(answer: httpx.Response) -> dict:
    """Below 500, JSON, a refusal's error in one line, no traceback; the JSON body."""
    assert answer.status_code < 500, (answer.status_code, answer.text[:500])
    assert "Traceback" not in answer.text and 'File "' not in answer.text, answer.text[:500]
    body = answer.json()
    event(f"HTTP {answer.status_code}")  # shown by --hypothesis-show-statistics
    if answer.status_code >= 400:
        assert isinstance(body["error"], str) and "\n" not in body["error"] and body["error"].strip(), body
    return body


def forget(d, body: dict) -> None:
    """Undo an enrolment a fuzzed request happened to make (a form mutated into another valid one)."""
    if "name" in body and "faces_added" in body:
        assert d.client.delete(f"/v1/people/{quote(body['name'], safe='')}", headers=auth(d)).status_code == 200


def form(name: str, photo: bytes, field: str = "photos", filename: str = "a.jpg") -> bytes:
    return (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"name\"\r\n\r\n{name}\r\n"
            f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{filename}\"\r\n"
            f"Content-Type: image/jpeg\r\n\r\n").encode() + photo + f"\r\n--{BOUNDARY}--\r\n".encode()


def test_short_load_over_sqlite(served, shared_data, tmp_path):
    from experiments.load_api import identities, measure, parse_args
    from experiments.load_api_report import table

    args = parse_args(["--home", str(served.home), "--backend", "sqlite", "--photos", str(shared_data / "celeba299"),
                       "--enrollers", "4", "--identifiers", "4", "--seconds", "5", "--strangers", "10",
                       "--out", str(tmp_path / "r.json")])
    result = measure(args, served, identities([shared_data / "celeba299"], "s")[:60])
    print(table(result))
    assert result["passed"] and result["api_processes"] == 1, table(result)
    assert result["enrol"]["ok"] == len(result["enrolled_people"]) >= 4 and result["identify"]["ok"] >= 4


@st.composite
def malformed_multipart(draw, path: str):
    """(photo, body, content type): a form as ``path`` expects it, then broken in one of several ways."""
    photo = draw(st.sampled_from([b"", b"\xff\xd8\xff", b"not a photo", "PHOTO"]))
    body = form(draw(st.text(max_size=20)), photo if isinstance(photo, bytes) else b"PHOTO",
                field="photos" if path == "/v1/people" else "photo")
    kind = draw(st.sampled_from(["random", "truncated", "flipped", "boundary", "fields", "valid"]))
    if kind == "random":
        body = draw(st.binary(max_size=3000))
    elif kind == "truncated":
        body = body[:draw(st.integers(0, len(body)))]
    elif kind == "flipped":
        positions = draw(st.lists(st.integers(0, len(body) - 1), min_size=1, max_size=8))
        body = bytearray(body)
        for i in positions:
            body[i] ^= draw(st.integers(1, 255))
        body = bytes(body)
    elif kind == "boundary":
        body = body.replace(BOUNDARY.encode(), draw(st.binary(max_size=80)), draw(st.integers(1, 3)))
    elif kind == "fields":
        body = body.replace(b'name="name"', draw(st.sampled_from([b'name=""', b"name", b'name="photos"', b""])))
    right = f"multipart/form-data; boundary={BOUNDARY}"
    content_type = right if draw(st.booleans()) else draw(st.sampled_from([
        "multipart/form-data", "multipart/form-data; boundary=", "multipart/form-data; boundary=other",
        f"multipart/mixed; boundary={BOUNDARY}", "text/plain", "application/x-www-form-urlencoded",
        "application/json", "", f"multipart/form-data; boundary=\"{BOUNDARY}\"; charset=koi8-r"]))
    return photo, body, content_type


@given(data=st.data(), path=st.sampled_from(["/v1/people", "/v1/identify", "/v1/verify"]))
@fuzz()
def test_malformed_multipart(served, data, path):
    photo, body, content_type = data.draw(malformed_multipart(path))
    if photo == "PHOTO":
        body = body.replace(b"PHOTO", served.photo)
    before = state(served)
    headers = {**auth(served), **({"Content-Type": content_type} if content_type else {})}
    answer = served.client.post(path, content=body, headers=headers)
    result = check_answer(answer)
    if answer.status_code >= 400:
        assert state(served) == before
    forget(served, result)


@given(size=st.integers(MAX_BODY + 1, 3 * MAX_BODY), chunked=st.booleans(),
       path=st.sampled_from(["/v1/people", "/v1/identify"]), token=st.booleans())
@fuzz()
def test_huge_bodies(served, size, chunked, path, token):
    body = form("Huge Body", b"\xff\xd8" + b"\0" * size)
    before = state(served)
    content = iter([body[i:i + 65536] for i in range(0, len(body), 65536)]) if chunked else body
    headers = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}", **(auth(served) if token else {})}
    try:
        answer = served.client.post(path, content=content, headers=headers)
    except httpx.TransportError:  # the server answered and closed before the client had sent it all
        answer = None
    if answer is not None:
        check_answer(answer)
        # A declared length over the limit is refused before the token is looked at; a chunked body
        # only once it passes the limit, after the token check.
        assert answer.status_code == (413 if token or not chunked else 401), answer.text
    assert state(served) == before


@given(count=st.integers(MAX_PHOTOS + 1, 8), big=st.booleans())
@fuzz()
def test_too_many_or_too_large_photos(served, count, big):
    photos = [("photos", (f"{i}.jpg", served.photo + (b"\0" * MAX_PHOTO if big else b""), "image/jpeg"))
              for i in range(1 if big else count)]
    before = state(served)
    answer = served.client.post("/v1/people", data={"name": "Too Many"}, files=photos, headers=auth(served))
    assert check_answer(answer) and answer.status_code == 413
    assert state(served) == before


def header_values(d):
    token = d.token
    return st.one_of(
        st.text(st.characters(min_codepoint=32, max_codepoint=255), max_size=200),
        st.builds(lambda s: f"Bearer {s}", st.text(st.characters(min_codepoint=33, max_codepoint=126), max_size=80)),
        st.builds(lambda s: f"Bearer fnk_{s}", st.text(st.characters(min_codepoint=33, max_codepoint=126), max_size=60)),
        st.builds(lambda i, c: f"Bearer {token[:i]}{c}{token[i + 1:]}", st.integers(0, len(token) - 1),
                  st.characters(min_codepoint=33, max_codepoint=126)),
        st.builds(lambda s, n: f"{s}{' ' * n}{token}", st.sampled_from(["Basic", "Token", "Bearer:", "", "Bearerx"]),
                  st.integers(0, 3)),
        st.just(f"Bearer {token} extra"), st.just("Bearer " + "x" * 9000), st.just(f"Bearer {d.identify_token}"))


@given(data=st.data())
@fuzz()
def test_wrong_tokens(served, data):
    if not hasattr(served, "identify_token"):
        from enroll.tokens import open_token_store

        with open_token_store(served.home) as tokens:
            served.identify_token = tokens.create(("identify",), "fuzz: identify only")[1]
    value = data.draw(header_values(served))
    scheme, _, secret = value.strip().partition(" ")
    valid = scheme.lower() == "bearer" and secret.strip() == served.token
    before = state(served)
    try:
        answer = served.client.post("/v1/people", data={"name": "Token Fuzz"},
                                    headers={"Authorization": value.encode("latin-1")},
                                    files=[("photos", ("a.jpg", served.photo, "image/jpeg"))])
    except httpx.LocalProtocolError:  # a header value httpx itself will not send
        assume(False)
    result = check_answer(answer)
    if not valid:
        expected = 403 if secret.strip() == served.identify_token and scheme.lower() == "bearer" else 401
        assert answer.status_code == expected, (value, answer.status_code, result)
        assert state(served) == before
    forget(served, result)


odd_names = st.one_of(
    st.text(max_size=40),
    st.text(st.characters(categories=["Cc", "Cf", "Zs", "Zl", "Zp", "Mn", "So"]), min_size=1, max_size=10),
    st.builds(lambda parts, sep: sep.join(parts), st.lists(st.sampled_from(["..", ".", "etc", "passwd", "~", "C:", ""]),
                                                               max_size=4), st.sampled_from(["/", "\\", "", " "])),
    st.text(min_size=190, max_size=400),
    st.sampled_from(["Zoë Ångström", "李小龍", "‮evil", "a\u200bb", " padded ", "\x00", "%2F", "?q=1#x", "null"]))


@given(name=odd_names)
@fuzz()
def test_odd_names(served, name):
    from enroll.gallery import GalleryError, validate_name

    try:
        stored = validate_name(name)
    except GalleryError:
        stored = None
    before = state(served)
    answer = served.client.post("/v1/people", data={"name": name}, headers=auth(served),
                                files=[("photos", ("a.jpg", served.photo, "image/jpeg"))])
    result = check_answer(answer)
    if stored is None:
        assert answer.status_code == 400 and state(served) == before, (name, result)
        return
    assert answer.status_code == 201 and result["name"] == stored, (name, result)
    path = f"/v1/people/{quote(stored, safe='')}"
    found = served.client.get(path, headers=auth(served))
    assert check_answer(found)["name"] == stored and found.status_code == 200
    assert check_answer(served.client.delete(path, headers=auth(served)))["removed"] == stored
    gone = served.client.delete(path, headers=auth(served))
    assert check_answer(gone) and gone.status_code == 404
    assert state(served)[0] == before[0]
