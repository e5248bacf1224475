"""``identify --method knn|svm`` (enroll/classifiers.py), ``verify --method head``
(enroll/verification_head.py) and experiments/closed_set.py, on synthetic embeddings: well-separated
unit-vector clusters, one per person. The CLI runs in-process on a home with a production meta.json
and a SQLite gallery; the photo's embedding (``service._query``) and the model are stand-ins, so no
TensorFlow model is built or trained."""
import json

import numpy as np
import pytest

from enroll import classifiers, cli, service
from enroll import verification_head as vh
from enroll.gallery import GalleryError
from enroll.home import meta_file, verification_head_file, write_production
from enroll.index import normalise
from enroll.store import SqliteGallery
from trainer.run_plan import RunPlan, Shards

DIM = 128
TAU = 0.9


def clusters(people: int, per: int, seed: int = 0, spread: float = 0.35):
    """(embeddings [people*per, DIM], identities, sources): same-person distance ≈ 0.5, others ≈ 1.4."""
    rng = np.random.default_rng(seed)
    centres = normalise(rng.normal(size=(people, DIM)))
    rows = [normalise(centres[p] + rng.normal(size=DIM) * spread / np.sqrt(DIM))[0]
            for p in range(people) for _ in range(per)]
    identities = [f"p{p:03d}" for p in range(people) for _ in range(per)]
    sources = [f"p{p:03d}/{k:02d}.jpg" for p in range(people) for k in range(per)]
    return np.stack(rows).astype(np.float32), identities, sources


def test_knn_and_svm_name_the_right_person(recwarn):
    emb, ids, _ = clusters(12, 4)
    gallery, probes = emb[0::4], emb[1::4]  # one enrolment photo each, another photo as the probe
    names = ids[0::4]
    for method in ("knn", "svm"):
        clf = classifiers.Classifier(method, names, gallery)
        assert not [w for w in recwarn if "classes" in str(w.message)]  # stderr stays ours
        assert list(clf.predict(probes)) == names, method
        assert clf.scores(probes).shape == (12, 12)
    two = classifiers.Classifier("svm", names[:2], gallery[:2])  # two people: sklearn's single margin
    assert list(two.predict(probes[:2])) == names[:2] and two.scores(probes[:2]).shape == (2, 2)


@pytest.mark.parametrize("people", [0, 1])
def test_fewer_than_two_people_is_refused(people):
    emb, ids, _ = clusters(1, 3)
    for method in ("knn", "svm"):
        with pytest.raises(GalleryError, match="at least 2 people"):
            classifiers.Classifier(method, ids[:people and 3], emb[:people and 3])


def test_unknown_beyond_tau_whoever_the_classifier_prefers():
    emb, ids, _ = clusters(5, 3)
    clf = classifiers.Classifier("svm", ids, emb)
    r = classifiers.answer(clf, ids, emb, emb[4], TAU, top_k=3)
    assert r["name"] == ids[4] and r["distance"] < 1e-5 and len(r["candidates"]) == 3
    assert r["candidates"][0]["match"] and r["candidates"][0]["score"] >= r["candidates"][1]["score"]
    stranger = normalise(np.random.default_rng(9).normal(size=DIM))[0]
    r = classifiers.answer(clf, ids, emb, stranger, TAU, top_k=2)
    assert r["name"] == "unknown" and r["distance"] > TAU and not any(c["match"] for c in r["candidates"])


def test_the_fitted_classifier_is_cached_until_the_gallery_changes():
    emb, ids, _ = clusters(4, 2)
    first = classifiers.classifier_for("/h", 1, 7, "knn", ids, emb)
    assert classifiers.classifier_for("/h", 1, 7, "knn", ids, emb) is first
    assert classifiers.classifier_for("/h", 1, 8, "knn", ids, emb) is not first  # an enrolment or removal
    assert classifiers.classifier_for("/h", 2, 8, "knn", ids, emb) is not first  # a promotion


def test_the_head_separates_pairs_and_stores_as_json(tmp_path):
    emb, ids, srcs = clusters(40, 6)
    head = vh.fit_head(emb, ids, srcs, pairs=500)
    assert len(head["coef"]) == DIM and head["train_accuracy"] > 0.95
    val = clusters(20, 6, seed=1)
    head.update(vh.calibrate_head(head, *val, far_target=0.01))
    assert 0 < head["threshold"] < 1 and head["threshold_method"] in ("far", "best_accuracy")
    same = vh.pair_probability(head, val[0][0], val[0][1])[0]
    other = vh.pair_probability(head, val[0][0], val[0][6])[0]
    assert same > head["threshold"] > other
    assert json.loads(json.dumps(head)) == head  # plain JSON, no pickle


# ------------------------------------------------------------------------------ the CLI
@pytest.fixture
def home(tmp_path, monkeypatch):
    """Production version 1 (a meta.json; no SavedModel is loaded) with 3 people, 2 faces each; the
    query photo's embedding is ``state["query"]``, set by each test."""
    from enroll.crops import encode_png

    home = tmp_path / "home"
    meta = {"version": 1, "model_name": "stand-in", "image_size": 8, "embedding_dim": DIM, "threshold": TAU,
            "far_target": 0.01, "source_run": str(tmp_path / "run")}
    meta_file(home, 1).parent.mkdir(parents=True)
    meta_file(home, 1).write_text(json.dumps(meta))
    write_production(home, 1)
    emb, ids, _ = clusters(3, 3)
    with SqliteGallery(home) as gallery:
        for p in range(3):
            crops = [(encode_png(np.full((8, 8, 3), 10 * p + k, np.uint8)), f"{k}.png") for k in range(2)]
            gallery.add_person(ids[3 * p], crops, {1: emb[3 * p:3 * p + 2]})
    state = {"query": emb[2]}  # p000's third photo, not enrolled
    monkeypatch.setattr(service, "query_photo", lambda h, path, embedder=None: service.Query(1, meta, state["query"], "", None))
    monkeypatch.setattr("enroll.model_versions.production", lambda h: (1, meta, object()))
    return home, state


def run(capsys, home, *argv):
    code = cli.main([*argv, "--json", "--home", str(home)])
    out, err = capsys.readouterr()
    return code, (json.loads(out) if out.strip() else None), [line for line in err.splitlines() if line.strip()]


@pytest.mark.parametrize("method", ["nearest", "knn", "svm"])
def test_identify_with_each_method(home, capsys, method):
    home, state = home
    code, r, err = run(capsys, home, "identify", "q.jpg", "--method", method)
    assert code == 0 and err == [] and r["name"] == "p000" and r["distance"] <= TAU
    state["query"] = normalise(np.random.default_rng(5).normal(size=DIM))[0]
    code, r, _ = run(capsys, home, "identify", "q.jpg", "--method", method)
    assert code == 0 and r["name"] == "unknown"


def test_classifier_refusals_are_one_line(home, capsys):
    home, _ = home
    with SqliteGallery(home) as gallery:
        gallery.remove_person("p001")
        gallery.remove_person("p002")
        before = gallery.list_people(), gallery.gallery_version()
    code, r, err = run(capsys, home, "identify", "q.jpg", "--method", "svm")
    assert code == 1 and len(err) == 1 and "at least 2 people" in err[0] and "1" in r["error"]
    code, _, err = run(capsys, home, "identify", "q.jpg", "--method", "forest")
    assert code == 2 and len(err) == 1
    code, _, err = run(capsys, home, "identify", "q.jpg", "--method", "knn", "--server", "http://x:8501")
    assert code == 1 and len(err) == 1 and "drop --server" in err[0]
    with SqliteGallery(home) as gallery:
        assert (gallery.list_people(), gallery.gallery_version()) == before


def fake_run(tmp_path, monkeypatch):
    """A run directory whose shards are names; embed_shards answers synthetic clusters for them."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    RunPlan(run_dir=str(run_dir), config={}, image_size=8,
            shards=Shards(train=[f"t{i}" for i in range(30)], val=[f"v{i}" for i in range(12)])).save()
    data = {"t": clusters(30, 5, seed=2), "v": clusters(12, 5, seed=3)}
    calls = []

    def embed_shards(model, names, size, batch_size=128):
        calls.append(len(names))
        emb, ids, srcs = data[names[0][0]]
        keep = [i for i, n in enumerate(ids) if f"{names[0][0]}{int(n[1:])}" in names]
        return emb[keep], [ids[i] for i in keep], [srcs[i] for i in keep]

    monkeypatch.setattr("trainer.evaluate.embed_shards", embed_shards)
    return calls


def test_verify_with_the_head_trains_it_once_and_stores_it_beside_the_version(home, tmp_path, monkeypatch, capsys):
    home, _ = home
    code, r, err = run(capsys, home, "verify", "q.jpg", "--name", "nobody", "--method", "head")
    assert code == 1 and len(err) == 1 and not verification_head_file(home, 1).exists()
    code, r, err = run(capsys, home, "verify", "q.jpg", "--name", "p000", "--method", "head")  # no run dir
    assert code == 1 and len(err) == 1 and "verification head" in err[0]
    assert not verification_head_file(home, 1).exists()
    calls = fake_run(tmp_path, monkeypatch)
    code, r, err = run(capsys, home, "verify", "q.jpg", "--name", "p000", "--method", "head")
    assert code == 0 and r["method"] == "head" and r["match"] is True and r["head"]["trained_now"]
    assert len(err) == 1 and err[0].startswith("note: trained the verification head")
    stored = json.loads(verification_head_file(home, 1).read_text())
    assert len(stored["coef"]) == DIM and stored["model_version"] == 1 and calls == [30, 12]
    code, r, err = run(capsys, home, "verify", "q.jpg", "--name", "p002", "--method", "head")
    assert code == 0 and r["match"] is False and not r["head"]["trained_now"] and err == [] and calls == [30, 12]
    code, r, _ = run(capsys, home, "verify", "q.jpg", "--name", "p000")  # the default: distance
    assert code == 0 and "probability" not in r and r["match"] is True
    verification_head_file(home, 1).write_text("{broken")  # unreadable: trained again, replaced
    code, r, _ = run(capsys, home, "verify", "q.jpg", "--name", "p000", "--method", "head")
    assert code == 0 and r["head"]["trained_now"] and json.loads(verification_head_file(home, 1).read_text())


# ------------------------------------------------------------------------- the experiment
def test_experiment_tables_on_synthetic_embeddings():
    from experiments import closed_set as exp

    emb, ids, srcs = clusters(16, 8, seed=4)
    tau = exp.calibrate_tau(*clusters(12, 6, seed=5), far_target=0.01)
    rows = exp.identification(emb, ids, srcs, {0.01: tau, 0.5: 2.0})
    assert [(r["photos"], r["method"]) for r in rows] == [(c, m) for c in (1, 3, 5) for m in ("nearest", "knn", "svm")]
    assert all(r["people"] == 8 and r["rank1"] > 0.9 and r["open_set"]["0.01"]["accuracy"] > 0.8 for r in rows)
    assert all(r["open_set"]["0.5"]["far"] == 1.0 for r in rows)  # τ = 2 accepts every stranger
    head = vh.fit_head(*clusters(30, 6, seed=6), pairs=300)
    threshold = vh.calibrate_head(head, *clusters(12, 6, seed=5), far_target=0.01)["threshold"]
    result = {"taus": {"0.01": tau}, "head_thresholds": {"0.01": threshold}, "identification": rows,
              "verification": exp.verification(head, emb, ids, srcs, {0.01: (tau, threshold)})}
    assert result["verification"]["head"]["auc"] > 0.95 and result["verification"]["distance"]["auc"] > 0.95
    assert exp.table(result).count("\n") == 2 + len(rows) + 2 + 4


def test_experiment_main_writes_json_and_markdown(tmp_path, monkeypatch, capsys):
    from experiments import closed_set as exp

    data = {"train": clusters(30, 6, seed=7), "val": clusters(12, 6, seed=8), "test": clusters(16, 8, seed=9)}
    plan = RunPlan(run_dir="run", config={}, image_size=8, shards=Shards(**{split: [split] for split in data}))
    monkeypatch.setattr("trainer.checkpoints.load_run", lambda run_dir: (object(), None, plan))
    monkeypatch.setattr("trainer.evaluate.embed_shards", lambda model, shards, size: data[shards[0]])
    out = tmp_path / "closed_set.json"
    assert exp.main(["runs/fake", "--far-targets", "0.01", "0.1", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert len(result["identification"]) == 9 and result["test_images"] == 128 and result["head"]["train_pairs"] > 0
    assert "| enrolment photos |" in out.with_suffix(".md").read_text() and set(result["taus"]) == {"0.01", "0.1"}
    assert exp.main(["runs/fake", "--far-targets", "2"]) == 2 and "error:" in capsys.readouterr().err
