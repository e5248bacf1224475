"""Bad input, fuzzed (hypothesis): command lines, image files and config files.

Every case must end in success (exit 0) or in a clean refusal: a non-zero exit with exactly one
stderr line, ``error: ...``, that is not the CLI's catch-all for bugs (``error: unexpected ...``);
never a traceback; and a refused ``enroll`` command leaves the home exactly as it was (people,
faces, crops, embeddings, change log, jobs, models, PRODUCTION).

1. ``enroll`` argv from a grammar (subcommands or garbage, known/unknown flags, names with unicode,
   path separators, control characters, undecodable bytes, empty or too long, paths that exist,
   do not, are directories or devices, numbers out of range), run in-process against a copy of a
   production home; ``trainer.train``, ``trainer.prepare`` and ``serving.export`` argv lightly, with
   the expensive step (training, data preparation, writing an export) stubbed out.
2. Image files: truncated and bit-flipped encodings, random bytes, text, empty files, valid images
   in odd modes and formats, 1x1 and extreme aspect ratios, headers claiming huge dimensions; fed to
   ``add-person``, ``identify`` and ``verify``.
3. Config files: YAML mappings with known and unknown sections/keys and wrong value types,
   non-mapping documents, invalid YAML, empty files and binary junk, for ``trainer.config.load``,
   ``python -m trainer.train --config`` / ``trainer.prepare --config`` (stubbed before any work),
   and ``$FACENET_HOME/enroll.yaml`` (``enroll status``, ``list``, ``add-person``, ``retrain``).

The example budgets keep the module at a couple of minutes on 2 cores (everything runs
in-process: TensorFlow, MTCNN and the production model load once). ``FUZZ_EXAMPLES=N`` runs N
examples per property instead; ``-m slow`` runs the module once more with a large budget
(``test_large_budget``). Hypothesis is derandomized, so a run is reproducible. The number of cases
tried per property is printed at the end and written to ``$FACENET_TEST_ARTIFACTS/fuzz_cases.json``
(default ``test-artifacts/``).
"""
import contextlib
import io
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import time
import warnings
import zlib
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from enroll import cli
from enroll.store import SqliteGallery
from tests.test_enroll_cli import home, lfw  # noqa: F401  (module fixtures reused)

REPO = Path(__file__).resolve().parents[1]

# Examples per property by default (about two minutes for the module on 2 cores).
DEFAULT_BUDGET = {"enroll_argv": 800, "train_argv": 300, "prepare_argv": 200, "export_argv": 200,
                  "image_files": 250, "trainer_config": 500, "trainer_config_cli": 300, "enroll_yaml": 200}
LARGE_BUDGET = 5000  # per property, for test_large_budget (the README figure)
CASES: Counter = Counter()  # cases tried per property, reported at module teardown


def budget(prop: str) -> int:
    return int(os.environ.get("FUZZ_EXAMPLES") or DEFAULT_BUDGET[prop])


def fuzz(prop: str):
    return settings(max_examples=budget(prop), deadline=None, derandomize=True, database=None, print_blob=False,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                           HealthCheck.data_too_large, HealthCheck.filter_too_much,
                                           HealthCheck.large_base_example])


@pytest.fixture(scope="module", autouse=True)
def report_cases(request):
    yield
    if not CASES:
        return
    summary = (f"fuzz: {sum(CASES.values())} cases tried ("
               + ", ".join(f"{prop} {n}" for prop, n in sorted(CASES.items())) + ")")
    folder = os.environ.get("FACENET_TEST_ARTIFACTS") or REPO / "test-artifacts"
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        (Path(folder) / "fuzz_cases.json").write_text(json.dumps(
            {"total": sum(CASES.values()), "per_property": dict(sorted(CASES.items())),
             "budget": {p: budget(p) for p in DEFAULT_BUDGET}}, indent=1))
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is None or capture is None:
        print(summary)
        return
    with capture.global_and_fixture_disabled():
        reporter.write_line("")
        reporter.write_line(summary)


# ------------------------------------------------------------------------------ running a CLI
@dataclass
class Outcome:
    code: int
    out: str
    err: str
    warnings: list  # Python warnings a real run would print on stderr


def invoke(prop: str, main, argv: list[str], capsys) -> Outcome:
    """Run ``main(argv)`` in-process as the console script would: exit status, stdout, stderr."""
    CASES[prop] += 1
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse's --help and usage errors, or a script's sys.exit(...)
            code = exc.code
    out, err = capsys.readouterr()
    if isinstance(code, str):  # sys.exit("message") prints it
        code, err = 1, err + code + "\n"
    words = re.sub(r"'[^']*'|\"[^\"]*\"|/\S*|\d+", "_", (err.splitlines() or [""])[-1]).split()[1:5]
    event(f"exit {code}" + (": " + " ".join(words) if code else ""))  # --hypothesis-show-statistics
    shown = [w for w in caught if not issubclass(w.category, (DeprecationWarning, PendingDeprecationWarning))]
    return Outcome(0 if code is None else code, out, err, shown)


def assert_clean(o: Outcome, argv, stderr_parked: bool = False) -> None:
    """Success, or one ``error: ...`` line on stderr; never a traceback or the catch-all for bugs.

    ``stderr_parked``: the enroll commands that load TensorFlow send everything written to stderr
    while they run to a scratch file (``cli._quiet_native_logs``), so a Python warning is not seen."""
    where = f"argv={argv!r} code={o.code} stderr={o.err!r} stdout={o.out[-300:]!r}"
    assert isinstance(o.code, int), where
    assert "Traceback" not in o.err, where
    if not stderr_parked:
        assert not o.warnings, f"{where} warnings={[str(w.message) for w in o.warnings]}"
    if o.code == 0:
        return
    lines = o.err.splitlines()
    assert len(lines) == 1, f"not one stderr line: {where}"
    assert lines[0].startswith("error: ") and lines[0][len("error: "):].strip(), where
    assert not lines[0].startswith("error: unexpected"), f"a bug behind the catch-all: {where}"


def snapshot(home: Path) -> dict:
    """Everything a refused command must leave untouched (tests/test_enroll_cli.py's ``state``, and more)."""
    with SqliteGallery(home) as g:
        version = int((home / "PRODUCTION").read_text())
        names, matrix = g.embeddings(version)
        people = g.list_people()
        faces = {n: [(f.id, f.sha256, f.source) for f in g.get(n).faces] for n, _ in people}
        return {"people": people, "faces": faces, "gallery_version": g.gallery_version(),
                "changes": [(c.seq, c.kind, c.name) for c in g.changes_since(0)],
                "jobs": [(j.id, j.kind, j.state) for j in g.jobs()],
                "crops": sorted(str(p.relative_to(home)) for p in (home / "crops").rglob("*")),
                "models": sorted(str(p.relative_to(home)) for p in (home / "models").rglob("*")),
                "production": (home / "PRODUCTION").read_text(), "embeddings": (names, np.asarray(matrix).tobytes()),
                "enroll.yaml": (home / "enroll.yaml").read_bytes() if (home / "enroll.yaml").is_file() else None}


def assert_unchanged_unless_ok(o: Outcome, before: dict, home: Path, argv, targeted: bool = True) -> None:
    """A refused command changed nothing in ``home``; a successful one left it consistent.
    ``targeted``: the command was aimed at ``home`` (else nothing may change there, whatever the outcome)."""
    after = snapshot(home)
    if not targeted:
        assert after == before, f"a command for another home changed this one: argv={argv!r}"
        return
    if o.code == 0:
        with SqliteGallery(home) as g:
            assert g.check_consistency(model_version=int(after["production"])) == [], argv
        return
    if "could not submit the retraining job" in o.err:
        # By design a failed submission is recorded: one more job row, in state failed; nothing else.
        new = [j for j in after["jobs"] if j not in before["jobs"]]
        assert [s for _, _, s in new] == ["failed"], (argv, new)
        before, after = {**before, "jobs": None}, {**after, "jobs": None}
    changed = [k for k in before if before[k] != after[k]]
    assert not changed, f"refused command changed {changed}: argv={argv!r} stderr={o.err!r}"


@pytest.fixture(scope="module")
def no_ray_jobs(tmp_path_factory):
    """Retraining submissions fail at once (no Ray head is started), as with a cluster that is down;
    $FACENET_HOME (the home when no --home is given) is a folder that must never be created."""
    from enroll import retrain

    def no_cluster(address):
        raise RuntimeError("fuzz: no Ray cluster here")

    default_home = tmp_path_factory.mktemp("fuzz-env") / "must-not-exist"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(retrain, "_job_client", no_cluster)
        mp.setenv("FACENET_HOME", str(default_home))
        yield
    assert not default_home.exists()


def copy_home(home: Path, tmp_path_factory, label: str) -> Path:
    target = tmp_path_factory.mktemp(label) / "home"
    shutil.copytree(home, target)
    return target


# ------------------------------------------------------------------------------ specimens
@pytest.fixture(scope="module")
def specimens(lfw, trained_run, tmp_path_factory) -> dict[str, str]:
    """Paths the argv grammar draws from: real photos, bad files, directories, missing paths, devices."""
    from PIL import Image

    d = tmp_path_factory.mktemp("specimens")
    real = lfw / "Hugo_Chavez" / "Hugo_Chavez_0002.jpg"
    (d / "notes.jpg").write_text("this is not a photo\n")
    (d / "empty.png").write_bytes(b"")
    Image.new("RGB", (10, 10), "white").save(d / "tiny.png")
    Image.new("RGB", (200, 200), "gray").save(d / "blank.png")
    (d / "truncated.jpg").write_bytes(real.read_bytes()[:2000])
    (d / "adir").mkdir()
    (d / "empty-run").mkdir()
    (d / "junk-run").mkdir()
    (d / "junk-run" / "plan.json").write_text("{not json")
    (d / "dict-run").mkdir()
    (d / "dict-run" / "plan.json").write_text("{}")
    unicode_name = d / "Zoë 李 ✓.jpg"
    shutil.copy(real, unicode_name)
    undecodable = os.path.join(os.fsdecode(d), os.fsdecode(b"\xff\xfe photo.jpg"))  # a Latin-1 file name
    shutil.copy(real, undecodable)
    (d / "loop").symlink_to(d / "loop")
    return {
        "photo": str(real), "photo2": str(lfw / "Jacques_Chirac" / "Jacques_Chirac_0002.jpg"),
        "photo3": str(lfw / "Vladimir_Putin" / "Vladimir_Putin_0003.jpg"),
        "group": str(lfw / "Tony_Blair" / "Tony_Blair_0001.jpg"), "unicode": str(unicode_name),
        "undecodable": undecodable, "text": str(d / "notes.jpg"), "empty": str(d / "empty.png"),
        "tiny": str(d / "tiny.png"), "blank": str(d / "blank.png"), "truncated": str(d / "truncated.jpg"),
        "dir": str(d / "adir"), "missing": str(d / "missing.jpg"), "missing_dir": str(d / "nowhere" / "x.jpg"),
        "loop": str(d / "loop"), "under_a_file": str(d / "notes.jpg" / "x.jpg"), "long": str(d / ("x" * 300)),
        "devnull": "/dev/null", "devzero": "/dev/zero", "root": "/", "empty_string": "", "dash": "-",
        "empty_run": str(d / "empty-run"), "junk_run": str(d / "junk-run"), "dict_run": str(d / "dict-run"),
        "run": str(trained_run),
    }


# ------------------------------------------------------------------------------ 1. enroll argv
TEXT = st.text(st.characters(exclude_characters="\x00"), max_size=40)  # argv strings cannot hold NUL
UNDECODABLE = st.binary(min_size=1, max_size=12).map(lambda b: os.fsdecode(b.replace(b"\x00", b"\xff")))
NAMES = st.one_of(
    st.sampled_from(["Ada Lovelace", "Colin Powell", "", " ", "  \t ", "a/b", "a\\b", ".", "..", "-x", "--append",
                     "x" * 100, "x" * 101, "Zoë Ñúñez", "李小龍", "\u202eevil", "tab\tname", "new\nline", "\x1b[31mred",
                     "emoji 😀", "e\u0301", "line\u2028sep", "nbsp\u00a0name", "zero\u200bwidth", "'quoted'",
                     'say "hi"', "%s %d {0}", "DROP TABLE people;--", "A" + "\u0300" * 50, "\udcff", "A\udcffB"]),
    TEXT, UNDECODABLE,
    st.builds(lambda c, n: c * n, st.characters(codec="utf-8", exclude_characters="\x00"), st.integers(95, 110)))
NUMBERS = st.one_of(
    st.integers(-5, 12).map(str), st.integers(-10 ** 30, 10 ** 30).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["", " ", "nan", "inf", "-inf", "1.5", "0x10", "1e3", "1_000", "٣", " 7 ", "+3", "--1", "abc"]))
FLAGS = ["--json", "--append", "--allow-several-faces", "--retrain", "--top-k", "--name", "--server", "--run",
         "--far-target", "--wait", "--timeout", "--home", "--bogus", "-x", "--", "-", "--jso", "--a", "--help", "-h"]
SERVERS = ["http://127.0.0.1:9", "http://", "http://[::1", "https://:0", "http://127.0.0.1:99999/x", ""]
COMMAND_NAMES = ["init", "add-person", "identify", "verify", "remove-person", "list", "status", "retrain",
                 "export-serving"]
EXPORT_FLAGS = ["--model-version", "--name", "--threshold", "--top-k", "--versions-to-keep"]


@st.composite
def enroll_argv(draw, files: dict[str, str], home: Path, scratch: Path) -> tuple[list[str], bool]:
    """(argv, whether it targets the fuzzed home) from a loose grammar of the enroll command line."""
    def paths():  # mostly the specimens, sometimes any text
        return st.sampled_from(sorted(files)).map(files.get) if draw(st.integers(0, 4)) else TEXT

    def rarely(strategy, usual):  # one time in eight ``strategy``, else ``usual()``
        return draw(strategy) if draw(st.integers(0, 7)) == 0 else usual()

    command = rarely(st.one_of(st.sampled_from(["", "help", "add", "-", "--json"]), TEXT),
                     lambda: draw(st.sampled_from(COMMAND_NAMES)))
    args: list[str] = []
    if command == "init":
        run, far = draw(paths()), draw(NUMBERS)
        if run == files["run"]:  # registering the real run takes seconds (and succeeds): keep it failing fast
            args += ["--run", run, "--far-target", draw(st.sampled_from(["0", "1", "nan", "-1", "inf", "abc"]))]
        else:
            args += draw(st.sampled_from([["--run", run], ["--run", run, "--far-target", far], ["--far-target", far], []]))
    elif command == "add-person":
        if draw(st.integers(0, 9)):
            args.append(draw(NAMES))
        args += draw(st.lists(paths(), min_size=rarely(st.just(0), lambda: 1), max_size=3))
    elif command == "identify":
        args += rarely(st.lists(paths(), max_size=2), lambda: [draw(paths())])
        if draw(st.booleans()):
            args += ["--top-k", draw(NUMBERS)]
        if draw(st.integers(0, 5)) == 0:
            args += ["--server", draw(st.sampled_from(SERVERS))]
    elif command == "verify":
        args += rarely(st.lists(paths(), max_size=2), lambda: [draw(paths())])
        if draw(st.integers(0, 7)):
            args += ["--name", draw(NAMES)]
    elif command == "remove-person":  # (a removal of someone the fuzz enrolled is a success like any other)
        args += rarely(st.lists(NAMES, max_size=2), lambda: [draw(NAMES)])
    elif command == "retrain":
        args += draw(st.sampled_from([[], ["--wait"], ["--timeout", draw(NUMBERS)], ["--wait", "--timeout", draw(NUMBERS)]]))
    elif command == "export-serving":
        for flag in draw(st.lists(st.sampled_from(EXPORT_FLAGS), max_size=2)):
            args += [flag, draw(NAMES if flag == "--name" else NUMBERS)]
    if draw(st.integers(0, 4)) == 0:
        extra = st.one_of(st.sampled_from(FLAGS), st.sampled_from(FLAGS).map(lambda f: f + "=1"), TEXT)
        args.insert(draw(st.integers(0, len(args))), draw(extra))
    if draw(st.booleans()):
        args.append("--json")
    where = draw(st.sampled_from(["fuzzed"] * 14 + ["missing", "file", "empty_dir", "long", "tilde", "loop", "none"]))
    home_arg = {"fuzzed": str(home), "missing": str(scratch / "no-home"), "file": files["text"],
                "empty_dir": str(scratch / "empty-home"), "long": str(scratch / ("h" * 300)),
                "tilde": "~no_such_user_fuzz/home", "loop": files["loop"], "none": None}[where]
    if home_arg is not None:
        at = draw(st.integers(0, len(args) + 1))
        if at == 0:
            argv = ["--home", home_arg, command, *args]
        else:
            argv = [command, *args[:at - 1], *draw(st.sampled_from([["--home", home_arg], [f"--home={home_arg}"]])),
                    *args[at - 1:]]
    else:
        argv = [command, *args]
    return argv, where == "fuzzed"


@pytest.fixture(scope="module")
def argv_home(home, tmp_path_factory):
    return copy_home(home, tmp_path_factory, "fuzz-argv")


@fuzz("enroll_argv")
@given(data=st.data())
def test_enroll_argv(data, argv_home, specimens, tmp_path_factory, no_ray_jobs, capsys):
    scratch = tmp_path_factory.getbasetemp() / "fuzz-argv-scratch"
    (scratch / "empty-home").mkdir(parents=True, exist_ok=True)
    argv, fuzzed_home = data.draw(enroll_argv(specimens, argv_home, scratch), label="argv")
    before = snapshot(argv_home)
    o = invoke("enroll_argv", cli.main, argv, capsys)
    parked = any(a in cli.TF_COMMANDS for a in argv)
    assert_clean(o, argv, stderr_parked=parked)
    assert_unchanged_unless_ok(o, before, argv_home, argv, targeted=fuzzed_home)
    # Read-only commands, and refused ones, create nothing where a home does not exist yet.
    assert not (scratch / "no-home").exists(), argv
    assert not os.listdir(scratch / "empty-home"), argv


# ------------------------------------------------------------------------------ 1b. other CLIs' argv
OVERRIDES = st.one_of(
    st.sampled_from(["train.epochs=3", "train.epochs=[1", "train.epochs=ten", "nodot=1", "=", ".=", "a.b.c=1",
                     "train.epochs=", "model.name=tiny", "model.name=resnet", "train.lerning_rate=0.1", "train=1",
                     "data.source=", "train.stop_when=val_accuracy>=", "train.learning_rate=.nan",
                     "train.epochs=!!python/object/apply:os.system [echo]", "bad\nsection.key=1", "train.bad\nkey=1",
                     "ray.num_workers=-1", "data.val_fraction=0.9", "eval.folds=0", "train.init_from=/no/such/run"]),
    st.builds(lambda s, k, v: f"{s}.{k}={v}", st.sampled_from(["data", "model", "train", "eval", "ray", "mlflow", "x"]),
              st.sampled_from(["epochs", "name", "source", "learning_rate", "seed", "nope"]), TEXT),
    TEXT)


@pytest.fixture(scope="module")
def config_files(tmp_path_factory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("fuzz-configs")
    files = {"smoke": REPO / "experiments" / "smoke.yaml", "celeba": REPO / "experiments" / "celeba_nn4.yaml"}
    for name, content in {"empty.yaml": b"", "list.yaml": b"- a\n- b\n", "binary.yaml": bytes(range(256)) * 4,
                          "invalid.yaml": b"train: [1, 2\n", "unknown.yaml": b"trian:\n  epochs: 1\n",
                          "nosource.yaml": b"model:\n  name: tiny\n", "intkey.yaml": b"1: 2\n",
                          "latin1.yaml": "train:\n  run_name: café\n".encode("latin-1")}.items():
        (d / name).write_bytes(content)
        files[name.split(".")[0]] = d / name
    (d / "adir.yaml").mkdir()
    files["dir"] = d / "adir.yaml"
    files["missing"] = d / "missing.yaml"
    return {k: str(v) for k, v in files.items()}


@pytest.fixture(scope="module")
def stubbed_work():
    """Stub the expensive steps after argument and config handling: no training, preparation or export."""
    from serving import export
    from trainer import prepare, train
    from trainer.run_plan import RunPlan

    def plan_run(cfg, config_path, *a, **k):
        if not cfg.data.source:
            raise train.ConfigError("no dataset given: set data.source to an identity-folder root or tfds:<name>")
        return RunPlan(run_dir="stub-run", config=cfg.to_dict(), image_size=0, run_name="stub")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(train, "plan_run", plan_run)
        mp.setattr(train, "run_tracked", lambda plan, cfg: {"compute": {"steps": 0, "images": 0, "train_flops": 0.0,
                                                                         "wall_seconds": 0.0}})
        mp.setattr(prepare, "prepare", lambda *a, **k: {"dir": "stub", "path": "stub.json", "counts": {},
                                                        "identities": {}, "fingerprint": ""})  # a manifest of nobody
        mp.setattr(prepare, "prune", lambda cache_dir: 0)
        # No runs/<run>/train.log for argv that passes: the terminal (capsys) is what is checked.
        mp.setattr(train.console, "capture", lambda path: contextlib.nullcontext(SimpleNamespace(path=path)))
        mp.setattr(export, "export", lambda *a, **k: Path("stub/1"))
        mp.setattr(export, "write_models_config", lambda *a, **k: None)
        yield


@st.composite
def train_argv(draw, files, configs):
    paths = st.one_of(st.sampled_from(sorted(files)).map(files.get), TEXT)
    pieces = st.one_of(
        st.tuples(st.just("--config"), st.one_of(st.sampled_from(sorted(configs)).map(configs.get), TEXT)),
        st.tuples(st.just("--set"), OVERRIDES),
        st.tuples(st.just("--resume"), paths),
        st.tuples(st.just("--init-from"), paths),
        st.tuples(st.sampled_from(["--bogus", "--config", "--set", "-x", "--conf", "--help"])),
        st.tuples(TEXT))
    return [a for piece in draw(st.lists(pieces, max_size=4)) for a in piece]


@fuzz("train_argv")
@given(data=st.data())
def test_train_argv(data, specimens, config_files, stubbed_work, capsys):
    from trainer import train

    files = {k: v for k, v in specimens.items() if k != "run"}  # --resume rewrites the run's plan.json
    argv = data.draw(train_argv(files, config_files), label="argv")
    assert_clean(invoke("train_argv", train.main, argv, capsys), argv)


@fuzz("prepare_argv")
@given(data=st.data())
def test_prepare_argv(data, specimens, config_files, stubbed_work, capsys):
    from trainer import prepare

    paths = st.one_of(st.sampled_from(sorted(specimens)).map(specimens.get), TEXT)
    pieces = st.one_of(
        st.tuples(st.just("--config"), st.one_of(st.sampled_from(sorted(config_files)).map(config_files.get), TEXT)),
        st.tuples(st.just("--source"), paths), st.tuples(st.just("--size"), NUMBERS),
        st.tuples(st.just("--cache-dir"), paths), st.tuples(st.sampled_from(["--prune", "--bogus", "--size", "-h"])),
        st.tuples(TEXT))
    argv = [a for piece in data.draw(st.lists(pieces, max_size=4), label="pieces") for a in piece]
    assert_clean(invoke("prepare_argv", prepare.main, argv, capsys), argv)


@fuzz("export_argv")
@given(data=st.data())
def test_export_argv(data, specimens, stubbed_work, tmp_path_factory, capsys):
    from serving import export

    scratch = tmp_path_factory.getbasetemp() / "fuzz-export-scratch"
    dirs = {k: v for k, v in specimens.items() if k not in ("run",)}  # loading the real run is slow, not bad input
    paths = st.one_of(st.sampled_from(sorted(dirs)).map(dirs.get), TEXT)
    pieces = st.one_of(
        st.tuples(st.just("--run"), paths), st.tuples(st.just("--home"), paths),
        st.tuples(st.just("--base-path"), st.just(str(scratch / "base"))), st.tuples(st.just("--name"), TEXT),
        st.tuples(st.sampled_from(["--model-version", "--threshold", "--top-k", "--versions-to-keep"]), NUMBERS),
        st.tuples(st.sampled_from(["--models-config", "--config-base-path"]), paths),
        st.tuples(st.sampled_from(["--bogus", "--run", "--home", "-h"])), st.tuples(TEXT))
    argv = [a for piece in data.draw(st.lists(pieces, max_size=4), label="pieces") for a in piece]
    assert_clean(invoke("export_argv", export.main, argv, capsys), argv)


# ------------------------------------------------------------------------------ 2. image files
@lru_cache(maxsize=None)
def face_image(person: str = "Hugo_Chavez", n: int = 2, size: int = 100):
    """A real face, centre-cropped and small (MTCNN finds it; every case stays fast)."""
    from PIL import Image

    from tests.conftest import SHARED

    with Image.open(SHARED / "data" / "lfw_mini" / person / f"{person}_{n:04d}.jpg") as img:
        return img.convert("RGB").crop((45, 45, 205, 205)).resize((size, size))


def encode(img, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, fmt, **options)
    return buffer.getvalue()


def png_claiming(width: int, height: int, pixels: bytes = b"\0" * 64, color_type: int = 2) -> bytes:
    """A well-formed PNG whose header claims ``width`` x ``height`` (the pixel data does not follow)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(pixels)) + chunk(b"IEND", b""))


@lru_cache(maxsize=None)
def png_bomb() -> bytes:
    """A complete, valid 1-bit-deep 8000x8000 gray PNG of a few kB (64 M pixels)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    side = 8000
    raw = (b"\0" + b"\0" * (side // 8)) * side
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def jpeg_claiming(width: int, height: int) -> bytes:
    data = bytearray(encode(face_image(size=64), "JPEG"))
    at = data.find(b"\xff\xc0")
    data[at + 5:at + 9] = struct.pack(">HH", height, width)
    return bytes(data)


FORMATS = ["JPEG", "PNG", "GIF", "BMP", "WEBP", "TIFF", "PPM", "ICO", "TGA"]
EXTENSIONS = [".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp", ".tif", ".pgm", "", ".txt", ".JPG"]


@st.composite
def image_file(draw) -> tuple[str, bytes]:
    """(label, file bytes) of an image-ish file."""
    from PIL import Image

    kind = draw(st.sampled_from(["truncated", "flipped", "random", "magic", "empty", "text", "mode", "format",
                                 "size", "huge", "exif", "frames"]))
    face = face_image(draw(st.sampled_from(["Hugo_Chavez", "Jacques_Chirac", "Vladimir_Putin"])), draw(st.integers(2, 4)),
                      draw(st.sampled_from([64, 100, 128])))
    if kind == "truncated":
        data = encode(face, fmt := draw(st.sampled_from(FORMATS)))
        return f"{fmt} truncated", data[:draw(st.integers(0, len(data) - 1))]
    if kind == "flipped":
        from tests.conftest import SHARED

        data = bytearray((SHARED / "data" / "lfw_mini" / "Hugo_Chavez" / "Hugo_Chavez_0005.jpg").read_bytes()
                         if draw(st.booleans()) else encode(face, draw(st.sampled_from(FORMATS))))
        for at in draw(st.lists(st.integers(0, len(data) - 1), min_size=1, max_size=20)):
            data[at] = draw(st.integers(0, 255))
        return "bytes flipped", bytes(data)
    if kind == "random":
        return "random bytes", draw(st.binary(max_size=3000))
    if kind == "magic":
        magic = draw(st.sampled_from([b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff\xe0", b"GIF89a", b"BM", b"RIFF\0\0\0\0WEBPVP8 ",
                                      b"II*\0", b"MM\0*", b"P6\n", b"\0\0\1\0"]))
        return "magic + junk", magic + draw(st.binary(max_size=500))
    if kind == "empty":
        return "empty", b""
    if kind == "text":
        return "text", draw(st.text(max_size=300)).encode("utf-8", "surrogatepass")
    if kind == "mode":
        mode = draw(st.sampled_from(["L", "LA", "P", "RGBA", "CMYK", "I;16", "1", "I", "F", "YCbCr", "LAB", "HSV", "PA"]))
        if mode == "I;16":
            img = Image.fromarray((np.asarray(face.convert("L"), np.uint16) * 257))
        else:
            img = face.convert(mode) if mode not in ("PA",) else face.convert("P").convert("PA")
        for fmt in draw(st.permutations(["PNG", "TIFF", "JPEG", "WEBP", "GIF", "BMP"])):
            try:
                return f"mode {mode} as {fmt}", encode(img, fmt)
            except (OSError, ValueError, KeyError):
                continue
        return f"mode {mode} as TIFF", encode(img.convert("RGB"), "TIFF")
    if kind == "format":
        return f"face as {(fmt := draw(st.sampled_from(FORMATS)))}", encode(face, fmt)
    if kind == "size":
        w, h = draw(st.sampled_from([(1, 1), (2, 1), (23, 23), (24, 24), (24, 2000), (2000, 24), (25, 4000),
                                     (4000, 25), (30, 30), (1, 5000)]))
        img = Image.fromarray(np.full((h, w, 3), draw(st.integers(0, 255)), np.uint8))
        if w * h >= 900 and draw(st.booleans()):  # a face pasted into a strip or a small square
            strip = face.resize((min(w, h),) * 2)
            img.paste(strip, (0, 0))
        return f"{w}x{h}", encode(img, draw(st.sampled_from(["PNG", "JPEG", "BMP"])))
    if kind == "huge":
        w, h = draw(st.sampled_from([(60000, 60000), (7000, 7000), (6000, 6000), (1, 10 ** 6), (10 ** 6, 1),
                                     (2 ** 31 - 1, 1), (0, 0), (65535, 65535), (8000, 8000)]))
        form = draw(st.sampled_from(["png", "jpeg", "bomb"]))
        if form == "bomb":
            return "valid 8000x8000 PNG bomb", png_bomb()
        if form == "jpeg":
            return f"JPEG header {w}x{h}", jpeg_claiming(min(w, 65535), min(h, 65535))
        return f"PNG header {w}x{h}", png_claiming(w, h)
    if kind == "exif":
        exif = Image.Exif()
        exif[0x0112] = draw(st.sampled_from([0, 1, 3, 6, 8, 9, 65535]))
        data = encode(face, draw(st.sampled_from(["JPEG", "PNG", "WEBP", "TIFF"])), exif=exif)
        if draw(st.booleans()):  # damage the EXIF block itself
            data = bytearray(data)
            at = max(data.find(b"Exif"), data.find(b"eXIf"), 0)
            for offset in draw(st.lists(st.integers(0, 40), min_size=1, max_size=6)):
                if at + offset < len(data):
                    data[at + offset] = draw(st.integers(0, 255))
            data = bytes(data)
        return "EXIF orientation", data
    frames = [face, face.transpose(Image.Transpose.FLIP_LEFT_RIGHT), Image.new("RGB", face.size, "black")]
    fmt = draw(st.sampled_from(["GIF", "TIFF", "WEBP", "PNG"]))
    return f"{fmt} with frames", encode(frames[0], fmt, save_all=True, append_images=frames[1:])


def test_odd_modes_of_a_real_face_decode_to_it(lfw):
    """Valid encodings of one face in other modes and formats decode to its gray levels (a 16-bit
    gray PNG used to decode all white: "no face found")."""
    from PIL import Image

    from trainer.align import read_image

    gray = face_image().convert("L")
    sixteen = Image.fromarray(np.asarray(gray, np.uint16) * 257)
    for img, fmt in [(gray, "PNG"), (gray.convert("LA"), "PNG"), (gray.convert("RGBA"), "PNG"), (gray.convert("P"), "PNG"),
                     (gray.convert("CMYK"), "JPEG"), (gray.convert("CMYK"), "TIFF"), (sixteen, "PNG"), (sixteen, "TIFF"),
                     (gray, "GIF"), (gray, "BMP"), (gray, "WEBP")]:
        decoded = read_image(encode(img, fmt)).astype(np.int16).mean(-1)
        assert np.abs(decoded - np.asarray(gray, np.int16)).mean() < 4, (img.mode, fmt)


@pytest.fixture(scope="module")
def image_home(home, tmp_path_factory):
    return copy_home(home, tmp_path_factory, "fuzz-images")


@fuzz("image_files")
@given(data=st.data())
def test_image_files(data, image_home, tmp_path_factory, no_ray_jobs, capsys):
    folder = tmp_path_factory.mktemp("img", numbered=True)
    files = data.draw(st.lists(image_file(), min_size=1, max_size=3), label="files")
    paths = []
    for i, (label, content) in enumerate(files):
        path = folder / f"photo{i}{data.draw(st.sampled_from(EXTENSIONS), label='extension')}"
        path.write_bytes(content)
        paths.append(str(path))
    command = data.draw(st.sampled_from(["add-person", "identify", "verify"]), label="command")
    argv = {"add-person": ["add-person", f"Fuzz Person {CASES['image_files']}", *paths],
            "identify": ["identify", paths[0]], "verify": ["verify", paths[0], "--name", "Colin Powell"]}[command]
    argv += data.draw(st.sampled_from([[], ["--json"], ["--allow-several-faces"] if command == "add-person" else []]))
    before = snapshot(image_home)
    o = invoke("image_files", cli.main, [*argv, "--home", str(image_home)], capsys)
    assert_clean(o, [argv, [label for label, _ in files]], stderr_parked=True)
    assert_unchanged_unless_ok(o, before, image_home, argv)
    if o.code == 0 and command == "add-person":
        with SqliteGallery(image_home) as g:
            assert g.get(argv[1]) is not None
    shutil.rmtree(folder)


# ------------------------------------------------------------------------------ 3. config files
SECTIONS = ["data", "model", "train", "eval", "ray", "mlflow"]
KEYS = ["source", "cache_dir", "align", "val_fraction", "test_fraction", "max_identities", "name", "embedding_dim",
        "input_size", "epochs", "steps_per_epoch", "optimizer", "learning_rate", "loss", "margin", "distance_metric",
        "images_per_identity", "identities_per_batch", "stop_when", "init_from", "folds", "pairs_per_fold",
        "far_target", "address", "num_workers", "use_gpu", "tracking_uri", "experiment", "retrain_after_changes",
        "retrain_epochs", "retrain_steps_per_epoch", "promotion_max_drop", "promotion_min_new_rank1", "ray_address"]
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-10, 10), st.integers(), st.floats(), TEXT,
                    st.sampled_from(["tiny", "nn2", "adam", "semihard", "L2", "val_accuracy>=0.5", "2024-01-01"]))
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                        st.dictionaries(TEXT, inner, max_size=3)), max_leaves=6)
KEY = st.one_of(st.sampled_from(KEYS), TEXT, st.integers(), st.none(), st.booleans(), st.floats(allow_nan=False))


def _dump(doc, flow: bool, unicode: bool) -> str:
    return yaml.safe_dump(doc, default_flow_style=flow, allow_unicode=unicode, sort_keys=False)


YAML_DOCS = st.one_of(
    # trainer-config shaped: known and unknown sections, known and unknown keys, any value types
    st.builds(_dump, st.dictionaries(st.one_of(st.sampled_from(SECTIONS), KEY),
                                     st.one_of(st.none(), st.dictionaries(KEY, VALUES, max_size=5), VALUES),
                                     max_size=4), st.booleans(), st.booleans()),
    # enroll.yaml shaped: a flat mapping
    st.builds(_dump, st.dictionaries(KEY, VALUES, max_size=5), st.booleans(), st.booleans()),
    st.builds(_dump, VALUES, st.booleans(), st.booleans()),  # any document: lists, scalars, null
    st.sampled_from(["", "---\n", "~\n", "null\n", "42\n", "'just a string'\n", "- a\n- b\n", "train: [1, 2\n",
                     "a: 1\n---\nb: 2\n", "[" * 5000, "{" * 5000, "a: &x [1]\nb: *x\n", "a: *undefined\n",
                     "!!python/object/apply:os.system ['echo hi']\n", "train: !!binary aGVsbG8=\n",
                     "train:\n  epochs: 3\n  epochs: 4\n", "train:\n\tepochs: 3\n", "\ufefftrain:\n  epochs: 2\n",
                     "train:\n  epochs: 0x10\n", "train:\n  learning_rate: .nan\n", "model:\n  embedding_dim: .inf\n",
                     "[" * 3000 + "]" * 3000, "a:\n" + "".join(" " * i + "b:\n" for i in range(1, 400)),
                     "? [a, b]\n: c\n", "train: {epochs: 1}\n" * 3, "retrain_after_changes: 1\n",
                     "retrain_after_changes: -1\nfar_target: .nan\n", "ray_address: http://127.0.0.1:9\n",
                     "'bad\\nkey': 1\n", "\"a\\nb\": {c: 1}\n", "train:\n  \"bad\\nkey\": 1\n"]),
    TEXT.map(lambda t: t + "\n"),
)
CONFIG_BYTES = st.one_of(
    YAML_DOCS.map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.binary(max_size=300),
    YAML_DOCS.map(lambda t: t.encode("utf-16", "surrogatepass")),
    st.builds(lambda text, cut: text.encode()[:cut],  # a shipped config, cut anywhere
              st.sampled_from([(REPO / "experiments" / n).read_text() for n in ("smoke.yaml", "celeba_nn4.yaml")]),
              st.integers(0, 2000)),
)


@fuzz("trainer_config")
@given(content=CONFIG_BYTES)
def test_trainer_config_load(content, tmp_path):
    from trainer import config as config_lib

    CASES["trainer_config"] += 1
    path = tmp_path / "config.yaml"
    path.write_bytes(content)
    try:
        cfg = config_lib.load(path)
    except config_lib.ConfigError as exc:
        assert str(exc).strip() and len(str(exc).splitlines()) == 1, repr(str(exc))
    else:
        assert isinstance(cfg, config_lib.Config)
        config_lib.from_dict(cfg.to_dict())  # what loads re-loads (it is saved with every run)


@fuzz("trainer_config_cli")
@given(content=CONFIG_BYTES, overrides=st.lists(OVERRIDES, max_size=2),
       tool=st.sampled_from(["train", "prepare"]))
def test_trainer_config_cli(content, overrides, tool, tmp_path, stubbed_work, capsys):
    from trainer import prepare, train

    path = tmp_path / "config.yaml"
    path.write_bytes(content)
    argv = ["--config", str(path)]
    if tool == "train":
        argv += [a for o in overrides for a in ("--set", o)]
    o = invoke("trainer_config_cli", train.main if tool == "train" else prepare.main, argv, capsys)
    assert_clean(o, [tool, argv, content[:200]])


@pytest.fixture(scope="module")
def yaml_home(home, tmp_path_factory):
    return copy_home(home, tmp_path_factory, "fuzz-enroll-yaml")


@fuzz("enroll_yaml")
@given(content=CONFIG_BYTES, command=st.sampled_from(["status", "add-person", "retrain", "list"]))
def test_enroll_yaml(content, command, yaml_home, no_ray_jobs, capsys):
    (yaml_home / "enroll.yaml").write_bytes(content)
    n = CASES["enroll_yaml"]
    argv = {"status": ["status"], "list": ["list", "--json"], "retrain": ["retrain"],
            "add-person": ["add-person", f"Yaml Person {n}", str(face_path(n))]}[command]
    before = snapshot(yaml_home)
    o = invoke("enroll_yaml", cli.main, [*argv, "--home", str(yaml_home)], capsys)
    assert_clean(o, [argv, content[:200]], stderr_parked=command in cli.TF_COMMANDS)
    assert_unchanged_unless_ok(o, before, yaml_home, [argv, content[:200]])


def face_path(n: int) -> Path:
    from tests.conftest import SHARED

    person = ["Hugo_Chavez", "Jacques_Chirac", "Vladimir_Putin", "Ariel_Sharon", "Arnold_Schwarzenegger"][n % 5]
    return SHARED / "data" / "lfw_mini" / person / f"{person}_{n // 5 % 10 + 1:04d}.jpg"


# ------------------------------------------------------------------------------ the large run
@pytest.mark.slow
def test_large_budget(tmp_path):
    """The module again with LARGE_BUDGET examples per property (the figure quoted in the README)."""
    env = {**os.environ, "FUZZ_EXAMPLES": str(LARGE_BUDGET),
           "FACENET_TEST_ARTIFACTS": os.environ.get("FACENET_TEST_ARTIFACTS") or str(tmp_path)}
    start = time.time()
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "not slow",
                             str(Path(__file__)), "--timeout", "0"], cwd=REPO, env=env, capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-2000:]
    cases = json.loads((Path(env["FACENET_TEST_ARTIFACTS"]) / "fuzz_cases.json").read_text())
    print(f"large fuzz run: {cases['total']} cases in {time.time() - start:.0f} s: {cases['per_property']}")
