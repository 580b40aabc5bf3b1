"""`streamd eval gate` and the calibration arithmetic it shares with `eval ident`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from streamd.cli import cli
from streamd.eval.features import ImageFeature
from streamd.eval.gate import (
    PairScores,
    allowed_count,
    curve_grid,
    gate_at_far,
    gate_curve,
    lowest_threshold,
    pair_similarities,
)
from streamd.eval.ident import calibrate_threshold, naming_scores
from streamd.eval.split import half_of, identity_of

# --------------------------------------------------------------------------- lowest_threshold


def test_lowest_threshold_keeps_out_all_but_the_allowed_share():
    # given ten scores 0.1 ... 1.0
    scores = np.round(np.arange(1, 11) / 10, 2)

    # when at most 20 % may pass, on a 0.005 grid
    t = lowest_threshold(scores, 0.2, step=0.005)

    # then the two top scores pass and the third (0.8) is kept out by the next grid step
    assert t == 0.805
    assert np.count_nonzero(scores >= t) == 2 and np.count_nonzero(scores >= t - 0.005) == 3


def test_a_score_equal_to_the_threshold_passes():
    # given one score that lies on the grid: it passes at 0.5 (>=), so no share lets 0.5 be the answer
    assert lowest_threshold([0.5], 0.0, step=0.005) == 0.505
    # and when one of two may pass, the lower score 0.2 must be kept out
    assert lowest_threshold([0.5, 0.2], 0.5, step=0.01) == 0.21


def test_lowest_threshold_when_everything_may_pass_or_nothing_is_there():
    assert lowest_threshold([0.3, 0.9], 1.0, step=0.01) == -1.0
    assert lowest_threshold([], 0.01, step=0.01, low=0.0) == 0.0
    # never-named probes (-inf) never pass, so they do not raise the threshold
    assert lowest_threshold([-np.inf, -np.inf, 0.4], 0.0, step=0.1) == 0.5
    # and they count in the share: one of these three may pass, so nothing needs keeping out
    assert lowest_threshold([-np.inf, -np.inf, 0.4], 0.34, step=0.1) == -1.0
    assert lowest_threshold([-np.inf, 0.3, 0.4], 0.34, step=0.1) == 0.4


def test_lowest_threshold_above_one_when_identical_images_must_be_kept_out():
    assert lowest_threshold([1.0, 1.0, 0.2], 0.0, step=0.005) == 1.005


def test_allowed_count_survives_float_shares():
    # 0.29 * 100 is 28.999999999999996 in floating point
    assert allowed_count(100, 0.29) == 29
    assert allowed_count(102, 0.01) == 1 and allowed_count(99, 0.01) == 0 and allowed_count(0, 0.5) == 0


# --------------------------------------------------------------------------- the gate on known distributions


def test_gate_at_far_on_two_normal_distributions():
    # given different-person similarities ~ N(0, 0.1) and same-person ~ N(0.6, 0.1), a million each
    rng = np.random.default_rng(7)
    scores = PairScores(rng.normal(0.6, 0.1, 1_000_000), rng.normal(0.0, 0.1, 1_000_000), 1_000_000)

    # when the gate is taken at FAR 0.001 on a 0.001 grid
    g = gate_at_far(scores, 0.001, step=0.001)

    # then it sits at the 99.9th percentile of N(0, 0.1) (0.309), and splits ~Phi(-2.91) = 0.18 % of same pairs
    assert g.gate == pytest.approx(0.309, abs=0.004)
    assert g.different_pass <= 0.001
    assert np.mean(scores.different >= g.gate - 0.001) > 0.001  # one step lower lets too many through
    assert g.same_below == pytest.approx(0.0018, abs=0.0004)


def test_gate_curve_counts_at_or_above_and_below():
    scores = PairScores(np.array([0.5, 0.6, 0.7, 0.8]), np.array([0.0, 0.1, 0.5, 0.6]), 4)
    points = gate_curve(scores, [0.0, 0.5, 0.65, 0.9])
    assert [(p.different_pass, p.same_below) for p in points] == [(1.0, 0.0), (0.5, 0.0), (0.0, 0.5), (0.0, 1.0)]


def test_curve_grid_spans_both_medians_and_the_gate():
    scores = PairScores(np.array([0.6, 0.7, 0.8]), np.array([0.0, 0.1, 0.2]), 3)
    grid = curve_grid(scores, [0.95])
    assert grid[0] <= 0.1 and grid[-1] >= 0.95 and len(grid) <= 16
    assert curve_grid(scores, [], step=0.25) == [0.0, 0.25, 0.5, 0.75]


# --------------------------------------------------------------------------- pairs


def _unit_rows(n: int, dim: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_pair_similarities_takes_every_pair_when_few():
    # given five vectors of three people (2 + 2 + 1)
    x = _unit_rows(5, 8, 0)
    labels = ["a", "b", "a", "c", "b"]

    # when every pair is scored
    s = pair_similarities(x, labels, max_different=100, seed=0)

    # then the two same pairs (0-2, 1-4) and the eight others come out with their cosines
    gram = x @ x.T
    assert sorted(s.same) == pytest.approx(sorted([gram[0, 2], gram[1, 4]]))
    others = [gram[i, j] for i in range(5) for j in range(i + 1, 5) if labels[i] != labels[j]]
    assert sorted(s.different) == pytest.approx(sorted(others))
    assert s.different_total == 8 and not s.sampled


def test_pair_similarities_samples_distinct_different_pairs_reproducibly():
    # given 60 vectors of 6 people (10 each): 1500 different-person pairs
    x = _unit_rows(60, 4, 1)
    labels = [f"p{k % 6}" for k in range(60)]

    # when at most 400 are taken, twice with one seed and once with another
    a = pair_similarities(x, labels, max_different=400, seed=3)
    b = pair_similarities(x, labels, max_different=400, seed=3)
    c = pair_similarities(x, labels, max_different=400, seed=4)

    # then 400 of the 1500 come out, the same ones for one seed; every value is a different-person cosine
    assert a.different_total == 1500 and a.sampled and len(a.different) == 400
    assert np.array_equal(a.different, b.different) and not np.array_equal(a.different, c.different)
    gram = x @ x.T
    allowed = np.array([gram[i, j] for i in range(60) for j in range(i + 1, 60) if labels[i] != labels[j]])
    assert np.abs(a.different[:, None] - allowed[None, :]).min(axis=1).max() < 1e-5
    assert len(np.unique(np.round(a.different, 6))) >= 395  # distinct pairs (a few cosines may coincide)
    assert len(a.same) == 6 * 45


# --------------------------------------------------------------------------- eval ident's threshold pick


def test_calibrated_threshold_uses_the_daemon_decision():
    from streamd.index.library import FeatureLibrary

    # given ann and bo on two axes, and strangers near ann (0.8 and 0.6) and one between both (thin margin)
    lib = FeatureLibrary.create(3, fingerprint="t")
    lib.add(np.eye(3, dtype=np.float32)[:2], ["ann", "bo"])

    def unit(v: list[float]) -> ImageFeature:
        return ImageFeature(np.asarray(v, np.float32) / np.linalg.norm(v), "ok")

    near, nearer = unit([0.6, 0.0, 0.8]), unit([0.8, 0.0, 0.6])
    between = unit([0.7, 0.7, 0.14])
    unknown = [("x", near), ("y", nearer), ("z", between), ("w", ImageFeature(None, "no_face"))]
    known = [("ann", unit([1.0, 0.1, 0.0])), ("bo", unit([0.0, 1.0, 0.3]))]

    # when each stranger's naming score is taken and a quarter of the four may be named
    named_from = naming_scores(lib, unknown, margin=0.05, topk=2)
    outcome = calibrate_threshold(lib, known, unknown, 0.25, margin=0.05, topk=2)

    # then the thin-margin and faceless probes are never named, and 0.6 (the second highest) is kept out
    assert named_from[:2] == pytest.approx([0.6, 0.8]) and np.isneginf(named_from[2:]).all()
    assert outcome.threshold == 0.605
    assert (outcome.false_accept, outcome.unknown, outcome.correct, outcome.known) == (1, 4, 2, 2)


# --------------------------------------------------------------------------- a real run through the CLI

PEOPLE = ["Antonio_Palocci", "Bill_Simon", "David_Beckham", "Gerhard_Schroeder", "Howard_Dean", "Hugo_Chavez",
          "Jennifer_Lopez", "Serena_Williams", "Jennifer_Aniston", "deepface_id02"]


def _onnx_args(models_dir: Path) -> list[str]:
    return [
        "--detector", "onnx", "--det-model", "yunet",
        "--det-model-path", str(models_dir / "yunet_2023mar/face_detection_yunet_2023mar.onnx"),
        "--embedder", "onnx", "--emb-model-path", str(models_dir / "mobilefacenet_foamliu/MobileFaceNet.onnx"),
    ]


@pytest.mark.shared
def test_eval_gate_cli_on_real_identities(tmp_path, models_dir, faces_dir):
    # given ten folders of real identities (one person under two names among them), five images each
    root = tmp_path / "ids"
    for name in PEOPLE:
        (root / name).mkdir(parents=True)
        for img in sorted((faces_dir / "identities" / name).glob("*.jpg"))[:5]:
            (root / name / img.name).symlink_to(img)
    tune = {identity_of(n) for n in PEOPLE if half_of(identity_of(n)) == "tune"}
    out = tmp_path / "gate.json"

    # when the gate is calibrated on the tuning half with the ONNX engine
    result = CliRunner().invoke(
        cli, ["eval", "gate", "--root", str(root), *_onnx_args(models_dir), "--far", "0.01", "--far", "0.001",
              "--json", str(out)],
    )

    # then the tuning half's identities (the two Aniston folders as one) are used and every pair is scored
    assert result.exit_code == 0, result.output
    assert f"tune half: {len(tune)} identities (10 folders, same-person folders merged)" in result.output
    assert "similarity | different people at or above | same person below" in result.output
    assert "gate at FAR 0.01: " in result.output and "gate at FAR 0.001: " in result.output
    data = json.loads(out.read_text())
    assert data["half"] == "tune" and data["identities"] == len(tune) and not data["sampled"]
    per_identity = {n: 10 if n == "Jennifer_Aniston" else 5 for n in tune}  # 5 + 5 merged
    faces = data["images"] - len(data["images_without_face"])
    assert data["images"] == sum(per_identity.values())
    assert data["same_pairs"] + data["different_pairs"] == faces * (faces - 1) // 2
    assert 0 < data["same_pairs"] <= sum(k * (k - 1) // 2 for k in per_identity.values())
    # the gate lies between the two medians, and the stricter FAR gives the higher gate
    loose, strict = data["gates"]
    assert data["different_similarity"]["median"] < strict["gate"] < data["same_similarity"]["median"]
    assert loose["gate"] <= strict["gate"] and data["gate"] == loose["gate"]
    assert strict["different_pass"] <= 0.001 and 0.0 <= strict["same_below"] < 0.5
    curve = data["curve"]
    assert [p["similarity"] for p in curve] == sorted(p["similarity"] for p in curve)
    assert all(a["different_pass"] >= b["different_pass"] and a["same_below"] <= b["same_below"]
               for a, b in zip(curve, curve[1:]))
