"""`streamd eval tracks`: track-level naming (vote, template, combinations, second opinion).

The decision helpers are checked on small hand-made vectors against the daemon's own rules; the
command runs a real model of ../shared on real faces.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from click.testing import CliRunner

from streamd.cli import cli
from streamd.eval.ident import Split
from streamd.eval.levers import Features
from streamd.eval.tracks import (
    HalfScores,
    TrackSet,
    candidates_from,
    evaluate,
    figures_of,
    fuse_scores,
    lowest_threshold,
    make_tracks,
    score_tracks,
    track_vote,
    vote_names,
)
from streamd.faces.vectors import l2_normalise
from streamd.tracking.config import TrackingSettings
from streamd.tracking.identity import DecisionRules
from streamd.types import Match

YUNET = "yunet_2023mar/face_detection_yunet_2023mar.onnx"
SCRFD = "scrfd_det_500m/det_500m.onnx"
FOAMLIU = "mobilefacenet_foamliu/MobileFaceNet.onnx"

RULES = DecisionRules.from_settings(TrackingSettings(), 0.5)


def _hits(*pairs: tuple[str, float]) -> tuple[Match, ...]:
    return tuple(Match(id=i, label=label, score=score) for i, (label, score) in enumerate(pairs))


# --------------------------------------------------------------------------- the vote


def test_three_agreeing_faces_name_the_track_and_fewer_do_not():
    # given faces whose best hit is "ann" above the vote threshold, and one that is nobody
    ann = _hits(("ann", 0.7), ("bob", 0.2))
    nobody = _hits(("bob", 0.3), ("ann", 0.25))
    # when the daemon's vote runs over them
    two, _ = track_vote([ann, ann, nobody], RULES)
    three, _ = track_vote([ann, nobody, ann, ann], RULES)
    # then min_votes (3) agreeing faces are needed for a name
    assert (two.outcome, two.reason) == ("unknown", "thin_evidence")
    assert (three.outcome, three.label) == ("known", "ann")


def test_a_name_is_kept_when_later_faces_disagree_a_little():
    # given a track named after three faces, then three faces voting for someone else
    ann = _hits(("ann", 0.8), ("bob", 0.1))
    bob = _hits(("bob", 0.6), ("ann", 0.1))
    # when the vote goes on face by face (hysteresis, as in the tracking manager)
    decision, tally = track_vote([ann, ann, ann, bob, bob, bob], RULES)
    # then the name stands: bob does not lead it by revise_margin, although a fresh vote would call it a tie
    assert (decision.label, decision.reason) == ("ann", "kept")
    assert tally.labels["bob"].count == 3
    assert track_vote([bob, bob, bob, ann, ann, ann], RULES)[0].label == "bob"


def test_the_vote_threshold_is_the_naming_threshold():
    # given a track of three faces close to ann's one gallery vector and far from bob's
    scores = score_tracks(
        TrackSet(["ann"], ["ann"], [[0, 1, 2]], ["ann", "bob"], np.array([3, 4])),
        l2_normalise(np.array([[1.0, 0.2], [1.0, 0.3], [1.0, 0.1], [1.0, 0.0], [0.0, 1.0]])), topk=5,
    )
    best = scores.face_scores([0])
    # when the vote runs just under and just over the faces' scores
    low = vote_names(scores, [0], float(best.min()) - 1e-6, RULES)
    high = vote_names(scores, [0], float(best.max()) + 1e-6, RULES)
    # then it names the track only when every face passes (min_votes 3 of 3), and never the other person
    assert low == ["ann"] and high == [None]


# --------------------------------------------------------------------------- tracks and scores


def test_tracks_are_the_next_k_images_and_strangers_first_k(tmp_path):
    # given a split with two enrolled people (one with too few images) and a stranger, one image without a face
    paths = [tmp_path / f"{i}.jpg" for i in range(12)]
    feats = Features(paths, found=np.array([True] * 11 + [False]), scrfd_used=np.zeros(12, bool))
    split = Split(
        gallery={"ann": paths[0:2], "bob": paths[2:4]},
        known_probes=[("ann", paths[4]), ("ann", paths[5]), ("ann", paths[6]), ("bob", paths[7])],
        unknown_probes=[("cy", paths[9]), ("cy", paths[10]), ("cy", paths[11])],
        unknown_people=["cy"],
    )
    # when tracks of 3 faces are made
    tracks = make_tracks(split, 3, feats)
    # then ann has a track, bob none, and the stranger's track drops the image without a face
    assert tracks.people == ["ann", "cy"] and tracks.truth == ["ann", None]
    assert tracks.rows == [[4, 5, 6], [9, 10]]
    assert tracks.gallery_labels == ["ann", "ann", "bob", "bob"]
    assert tracks.strangers == [1] and tracks.known == [0]


def test_the_template_is_the_normalised_mean_searched_once():
    # given random unit vectors for a gallery of 3 people (2 each) and a track of 3 faces
    rng = np.random.default_rng(3)
    vectors = l2_normalise(rng.normal(size=(9, 16)))
    tracks = TrackSet(["b"], ["b"], [[6, 7, 8]], ["a", "a", "b", "b", "c", "c"], np.arange(6))
    # when the track is scored
    scores = score_tracks(tracks, vectors, topk=5)
    # then the template's hits are the cosines of the mean vector, best first, five of them
    mean = l2_normalise(vectors[6:9].mean(axis=0, keepdims=True))[0]
    expect = sorted(((float(vectors[j] @ mean), j) for j in range(6)), reverse=True)[:5]
    got = [(m.score, m.id) for m in scores.template_hits[0]]
    assert [j for _, j in got] == [j for _, j in expect]
    assert [s for s, _ in got] == pytest.approx([s for s, _ in expect], abs=1e-6)
    # and per face, the best cosine of each person is the best of that person's two vectors
    sims = vectors[6:9] @ vectors[:6].T
    assert scores.per_label[0] == pytest.approx(np.maximum(sims[:, 0::2], sims[:, 1::2]), abs=1e-6)
    assert scores.first_hits[0] == scores.face_hits[0][0]


def test_fusion_is_the_mean_of_both_models_best_score_per_person():
    # given two embedders' vectors of the same gallery and track
    rng = np.random.default_rng(5)
    tracks = TrackSet(["a"], ["a"], [[4, 5]], ["a", "a", "b", "b"], np.arange(4))
    a = score_tracks(tracks, l2_normalise(rng.normal(size=(6, 8))), topk=5)
    b = score_tracks(tracks, l2_normalise(rng.normal(size=(6, 8))), topk=5)
    # when their scores are fused
    fused = fuse_scores(a, b, topk=5)
    # then each face's hits are the people by the mean of the two per-person scores
    mean = (a.per_label[0] + b.per_label[0]) / 2
    for face, hits in enumerate(fused.face_hits[0]):
        assert [m.label for m in hits] == [a.labels[j] for j in np.argsort(-mean[face])]
        assert hits[0].score == pytest.approx(float(mean[face].max()))


# --------------------------------------------------------------------------- thresholds and figures


def test_the_threshold_is_the_lowest_before_too_many_strangers_are_named():
    # given 5 strangers with single scores; at most 1 may be named
    scores = np.array([0.1, 0.3, 0.5, 0.6, 0.9])

    def names_at(t: float) -> list[str | None]:
        return ["x" if s >= t else None for s in scores]

    # when the threshold is searched
    t = lowest_threshold(names_at, candidates_from(scores), allowed=1)
    # then one stranger is named at it and a second one just below it
    assert sum(n is not None for n in names_at(t)) == 1
    assert sum(n is not None for n in names_at(float(np.nextafter(t, -np.inf)))) == 2
    assert 0.6 < t <= 0.9


def test_the_threshold_does_not_slip_into_a_dip():
    # given a naming rule that names too many strangers at 0.5 but none below 0.4 again
    def names_at(t: float) -> list[str | None]:
        return ["x", "y"] if 0.45 <= t <= 0.55 else [None, None]

    # when the threshold is searched from above
    t = lowest_threshold(names_at, np.array([0.1, 0.3, 0.5, 0.6, 0.9]), allowed=0)
    # then it stops above the first threshold that names too many
    assert t == 0.6


def test_figures_count_right_wrong_and_strangers_named():
    # given three enrolled tracks and two strangers' tracks
    truth = ["a", "b", "c", None, None]
    named = ["a", "c", None, "a", None]
    # when the figures are made
    f = figures_of(truth, named, 0.4)
    # then one is right, one wrong, one stranger named
    assert (f.correct, f.wrong, f.known, f.unknown_named, f.unknown) == (1, 1, 3, 1, 2)
    assert f.right.tolist() == [True, False, False]


# --------------------------------------------------------------------------- variants


def _synthetic_half(seed: int) -> HalfScores:
    """12 enrolled people (2 gallery images, 4-face tracks of noisy copies) and 6 strangers, two embedders."""
    rng = np.random.default_rng(seed)
    dim, people, strangers, k = 32, 12, 6, 4
    out = {}
    rows: list[list[int]] = []
    gallery_labels: list[str] = []
    gallery_rows: list[int] = []
    for emb, noise in (("e1", 0.9), ("e2", 1.1)):
        centres = rng.normal(size=(people + strangers, dim))
        vecs: list[np.ndarray] = []
        rows, gallery_labels, gallery_rows = [], [], []
        for p in range(people + strangers):
            if p < people:
                for _ in range(2):
                    gallery_labels.append(f"p{p}")
                    gallery_rows.append(len(vecs))
                    vecs.append(centres[p] + noise * rng.normal(size=dim))
            track = []
            for _ in range(k):
                track.append(len(vecs))
                vecs.append(centres[p] + noise * rng.normal(size=dim))
            rows.append(track)
        out[emb] = l2_normalise(np.array(vecs))
    truth: list[str | None] = [f"p{p}" for p in range(people)] + [None] * strangers
    tracks = TrackSet(truth, [f"p{p}" for p in range(people + strangers)], rows, gallery_labels,
                      np.array(gallery_rows))
    scores = {e: score_tracks(tracks, v, topk=5) for e, v in out.items()}
    scores["e1+e2"] = fuse_scores(scores["e1"], scores["e2"], topk=5)
    return HalfScores(tracks, scores)


def test_every_variant_keeps_the_tuning_halfs_strangers_in_bounds_and_the_second_model_runs_on_the_undecided():
    # given two synthetic halves and the pair e1 (first) + e2 (second opinion)
    tune, report = _synthetic_half(1), _synthetic_half(2)
    # when every variant is evaluated (no stranger may be named on the tuning half)
    res = evaluate(tune, report, ["e1", "e2"], [("e1", "e2")], RULES, 0.02, 0.0, 2.0 / 3.0)
    # then each one's tuning figures name no stranger
    assert {r.tune.unknown_named for r in res.values()} == {0}
    assert ("e1", "vote, else template") in res and ("e1+e2", "2nd opinion") in res
    # and the second model ran exactly on the report tracks the first model's vote left unnamed
    tv = res[("e1", "vote")].thresholds["t"]
    first = vote_names(report.scores["e1"], range(len(report.tracks.truth)), tv, RULES)
    so = res[("e1+e2", "2nd opinion")]
    assert so.thresholds["e1"] == tv
    assert so.second_known + so.second_strangers == sum(n is None for n in first)
    # and every track the first vote named rightly keeps that name under the second opinion
    assert np.all(so.report.right[res[("e1", "vote")].report.right])
    # and the vote-then-template names everything the vote names rightly
    ve = res[("e1", "vote, else template")].report.right
    assert np.all(ve[res[("e1", "vote")].report.right])


# --------------------------------------------------------------------------- the command


def test_eval_tracks_is_registered_with_its_options():
    result = CliRunner().invoke(cli, ["eval", "tracks", "--help"])
    assert result.exit_code == 0, result.output
    assert "--track-faces" in result.output and "--pairs" in result.output


@pytest.mark.shared
def test_eval_tracks_cli_on_real_identities(tmp_path, models_dir, faces_dir):
    # given 30 real identities (linked, not copied) and foamliu's model standing in for both
    # embedders, so that the second opinion runs without the converted Paddle model
    root = tmp_path / "ids"
    root.mkdir()
    for folder in sorted((faces_dir / "identities").iterdir())[:30]:
        (root / folder.name).symlink_to(folder, target_is_directory=True)
    model = models_dir / FOAMLIU
    args = [
        "eval", "tracks", "--root", str(root), "--embedders", "foamliu,mobileface", "--pairs", "foamliu+mobileface",
        "--foamliu-model", str(model), "--mobileface-model", str(model),
        "--yunet-model", str(models_dir / YUNET), "--scrfd-model", str(models_dir / SCRFD),
        "--track-faces", "3", "--seeds", "0-1", "--cache-dir", str(tmp_path / "cache"), "--timing-images", "2",
        "--json", str(tmp_path / "out.json"),
    ]
    # when it runs
    result = CliRunner().invoke(cli, args)
    # then every variant is reported for both seeds
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "out.json").read_text())
    variants = {(r["family"], r["variant"]) for r in data["results"]}
    assert ("foamliu", "vote") in variants and ("foamliu", "template") in variants
    assert ("foamliu+mobileface", "2nd opinion") in variants
    assert len(data["results"]) == 2 * len(variants)
    # the tracks are real: enrolled people's tracks exist, and the vote names most of them rightly
    vote = next(r for r in data["results"] if r["variant"] == "vote" and r["family"] == "foamliu" and r["seed"] == 0)
    assert vote["report"]["known"] > 5 and vote["report"]["correct_rate"] > 0.6
    # the threshold chosen on the tuning half names at most the allowed share of its stranger tracks
    assert vote["tune"]["unknown_named"] <= math.floor(0.01 * vote["tune"]["unknown"] + 1e-9)
    # with the same model twice, fusion changes no score: the second opinion names what the vote names
    so = next(r for r in data["results"]
              if r["variant"] == "2nd opinion" and r["seed"] == 0 and r["family"] == "foamliu+mobileface")
    assert so["report"]["correct"] >= vote["report"]["correct"]
    assert "CPU cost" in result.output and data["costs_ms"]["foamliu embedding per face"] > 0
    assert len(list((tmp_path / "cache").glob("levers-*.npz"))) == 3
