"""`streamd eval levers` and the embedders' flip option.

The scoring helpers are checked on small hand-made vectors against the daemon's own decision rule;
the flip option and the command run the real models of ../shared on real faces.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from streamd.cli import cli
from streamd.eval.ident import Split
from streamd.eval.levers import (
    Features,
    HalfData,
    Lever,
    Scored,
    _parse_seeds,
    best_and_gap,
    choose_threshold,
    default_levers,
    figures_at,
    paired,
    score_half,
)
from streamd.faces.vectors import flip_average, l2_normalise, mirror_chip
from streamd.index.decision import decide
from streamd.types import Match

LFW = "pairs/lfw_view1_devtest/images"
FACE = f"{LFW}/Abdullah_Gul/Abdullah_Gul_0013.jpg"
YUNET = "yunet_2023mar/face_detection_yunet_2023mar.onnx"
FOAMLIU = "mobilefacenet_foamliu/MobileFaceNet.onnx"


# --------------------------------------------------------------------------- scoring helpers


def test_best_label_and_margin_are_the_daemons_decision_with_every_hit():
    # given random similarities of 50 probes to 12 gallery vectors of 5 people (2-3 vectors each)
    rng = np.random.default_rng(1)
    labels = ["a", "a", "b", "b", "b", "c", "c", "d", "d", "e", "e", "e"]
    sims = rng.uniform(-0.2, 0.9, size=(50, len(labels))).astype(np.float32)
    # when the levers' vectorised search picks each probe's best label and its lead
    best, score, gap = best_and_gap(sims, labels)
    # then it is what decide() makes of the same hits
    for i in range(len(sims)):
        hits = [Match(label=lbl, score=float(s), id=j) for j, (lbl, s) in enumerate(zip(labels, sims[i]))]
        d = decide(hits, -math.inf, 0.0)
        assert (best[i], pytest.approx(d.score, abs=1e-6), pytest.approx(d.margin, abs=1e-6)) == (
            d.label, score[i], gap[i]
        )


def _scored(known_scores: list[float], unknown_scores: list[float]) -> Scored:
    truth = ["p"] * len(known_scores) + [None] * len(unknown_scores)
    best = ["p"] * len(known_scores) + ["q"] * len(unknown_scores)
    scores = np.array(known_scores + unknown_scores, dtype=np.float64)
    return Scored(truth=truth, best=best, score=scores, gap=np.full(len(scores), 0.5))


def test_the_threshold_is_the_lowest_that_names_at_most_one_percent_of_strangers():
    # given 200 strangers' probes with distinct scores (1 % = 2 of them may be named)
    unknown = list(np.linspace(0.0, 0.6, 200))
    scored = _scored([0.7, 0.65, 0.3], unknown)
    # when the threshold is chosen
    t = choose_threshold(scored, margin=0.02, max_unknown_named=0.01)
    # then exactly the two best strangers are named, and any lower threshold names a third
    assert figures_at(scored, t, 0.02).unknown_named == 2
    assert figures_at(scored, float(np.nextafter(t, -np.inf)), 0.02).unknown_named == 3
    assert figures_at(scored, t, 0.02).correct == 2  # 0.7 and 0.65 pass, 0.3 does not


def test_strangers_stopped_by_the_margin_do_not_raise_the_threshold():
    # given strangers whose best label leads by less than the margin
    scored = _scored([0.4], [0.9, 0.8])
    scored = Scored(scored.truth, scored.best, scored.score, np.array([0.5, 0.01, 0.01]))
    # when the threshold is chosen, then nothing needs stopping: every known probe may pass
    assert choose_threshold(scored, margin=0.02, max_unknown_named=0.01) == -math.inf
    assert figures_at(scored, -math.inf, 0.02).correct == 1


def test_paired_counts_and_mcnemars_exact_p():
    # given a lever that names 5 known probes the baseline missed and loses none
    base = figures_at(_scored([0.1] * 5 + [0.9] * 5, []), 0.5, 0.0)
    lever = figures_at(_scored([0.9] * 10, []), 0.5, 0.0)
    # then
    assert paired(lever, base) == (5, 0, pytest.approx(2 / 32))
    assert paired(base, base) == (0, 0, 1.0)


def _features(vectors: dict[str, np.ndarray], mirrors: dict[str, np.ndarray]) -> Features:
    paths = [Path(f"/x/{name}.jpg") for name in vectors]
    views = np.stack([np.stack([vectors[n], mirrors[n], vectors[n], mirrors[n]]) for n in vectors])
    feats = Features(paths, np.ones(len(paths), bool), np.zeros(len(paths), bool))
    feats.views["e"] = l2_normalise(views.reshape(-1, views.shape[-1])).reshape(views.shape)
    return feats


def test_gallery_levers_enrol_what_they_say():
    # given person A with two images, person B with one, and a probe of A whose vector is A1's
    # mirror image's (and whose mirror image's is A1's)
    e = np.eye(4, dtype=np.float32)
    vectors = {"A1": e[0], "A2": e[1], "B1": e[2], "probe": e[3]}
    mirrors = {"A1": e[3], "A2": e[1], "B1": e[2], "probe": e[0]}
    feats = _features(vectors, mirrors)
    split = Split(gallery={"A": [Path("/x/A1.jpg"), Path("/x/A2.jpg")], "B": [Path("/x/B1.jpg")]},
                  known_probes=[("A", Path("/x/probe.jpg"))], unknown_probes=[])
    half = HalfData(split, others=[])
    # when scored with plain, mirrored and mean galleries
    plain = score_half(feats, half, Lever("baseline", ("e",)))
    mirror = score_half(feats, half, Lever("mirror gallery", ("e",), gallery="mirror"))
    mean = score_half(feats, half, Lever("person mean", ("e",), gallery="mean"))
    flip = score_half(feats, half, Lever("flip", ("e",), flip=True))
    # then only the mirrored gallery holds the probe's exact vector (A1 mirrored)
    assert plain.score[0] == pytest.approx(0.0, abs=1e-6)
    assert (mirror.best[0], mirror.score[0]) == ("A", pytest.approx(1.0))
    # A's mean template is normalise(e0 + e1): no e3 component
    assert mean.score[0] == pytest.approx(0.0, abs=1e-6)
    # flip: probe normalise(e3 + e0) against A1 normalise(e0 + e3) = the same vector
    assert (flip.best[0], flip.score[0]) == ("A", pytest.approx(1.0))


def test_cohort_normalisation_shifts_each_probe_by_its_cohort_and_keeps_its_label():
    # given three enrolled people, one probe and a cohort of three other people (random vectors)
    rng = np.random.default_rng(3)
    names = ["A1", "B1", "C1", "probe", "X1", "X2", "X3"]
    vecs = {n: l2_normalise(rng.normal(size=(1, 8)))[0] for n in names}
    feats = _features(vecs, vecs)
    split = Split(gallery={"A": [Path("/x/A1.jpg")], "B": [Path("/x/B1.jpg")], "C": [Path("/x/C1.jpg")]},
                  known_probes=[("A", Path("/x/probe.jpg"))], unknown_probes=[])
    half = HalfData(split, others=[Path(f"/x/X{i}.jpg") for i in (1, 2, 3)])
    # when scored plainly and with each cohort normalisation
    plain = score_half(feats, half, Lever("baseline", ("e",)))
    k2 = score_half(feats, half, Lever("cohort", ("e",), norm="cohort-other-half"), cohort_k=2)
    tnorm = score_half(feats, half, Lever("t", ("e",), norm="tnorm-other-half"))
    gal = score_half(feats, half, Lever("g", ("e",), norm="cohort-gallery"), cohort_k=1)
    cohort = np.array([vecs["probe"] @ vecs[f"X{i}"] for i in (1, 2, 3)])
    others = sorted((vecs["probe"] @ vecs[n] for n in ("A1", "B1", "C1")), reverse=True)
    # then the label and the margin stay, and only the score is shifted (and scaled) per probe
    assert k2.best == plain.best == tnorm.best == gal.best
    assert np.array_equal(k2.gap, plain.gap)
    assert k2.score[0] == pytest.approx(plain.score[0] - np.sort(cohort)[-2:].mean(), abs=1e-6)
    assert tnorm.score[0] == pytest.approx((plain.score[0] - cohort.mean()) / cohort.std(), abs=1e-5)
    assert gal.score[0] == pytest.approx(others[0] - others[1], abs=1e-6)


def test_fusion_pairs_and_seed_lists():
    levers = default_levers(["a", "b", "c"], cohort_k=10)
    assert {lv.label for lv in levers if len(lv.embedders) == 2} == {"a+b", "a+c", "b+c"}
    assert all(any(lv.name == "baseline" and lv.embedders == (e,) for lv in levers) for e in "abc")
    assert _parse_seeds("0-2,5") == [0, 1, 2, 5]


def test_flip_average_is_the_normalised_sum_of_both_views():
    # given a stand-in embedder that reads a chip's first row as its vector
    def embed(chips):
        return l2_normalise(np.stack([c[0, :, 0].astype(np.float32) for c in chips]))

    chip = np.arange(4 * 3 * 3, dtype=np.uint8).reshape(4, 3, 3) + 1
    out = flip_average(embed, [chip])
    expected = l2_normalise(embed([chip]) + embed([mirror_chip(chip)]))
    assert np.allclose(out, expected) and np.array_equal(mirror_chip(chip), chip[:, ::-1])


# --------------------------------------------------------------------------- flip in the real embedders


@pytest.fixture(scope="module")
def face_and_image(models_dir: Path, faces_dir: Path):
    from streamd.faces.onnx_engine import YuNetDetector
    from streamd.images import read_image

    image = read_image(faces_dir / FACE)
    faces = YuNetDetector(models_dir / YUNET).detect(image)
    assert len(faces) == 1
    return image, faces


def _check_flip(plain, flipped, image, faces, chips, embed_plain_chips) -> None:
    """embed() and the chips path of the flip embedder give normalise(v(chip) + v(mirror chip))."""
    v = embed_plain_chips(chips)
    m = embed_plain_chips([mirror_chip(c) for c in chips])
    expected = l2_normalise(v + m)
    got = flipped.embed(image, faces)
    assert got.shape == expected.shape and got.dtype == np.float32
    assert np.allclose(got, expected, atol=1e-5)
    # and the flipped vector is not the plain one: the mirror view really changes it
    assert float((got * v).sum()) < 0.9999
    assert flipped.fingerprint != plain.fingerprint and flipped.fingerprint.endswith(":flip")
    assert ":flip" not in plain.fingerprint


@pytest.mark.shared
def test_onnx_flip_embeds_the_face_and_its_mirror(models_dir, face_and_image):
    from streamd.faces.align import ARCFACE_SIZE, face_chip
    from streamd.faces.factory import create_embedder
    from streamd.settings import OnnxEmbedderSettings

    image, faces = face_and_image
    plain = create_embedder(OnnxEmbedderSettings(model_path=models_dir / FOAMLIU))
    flipped = create_embedder(OnnxEmbedderSettings(model_path=models_dir / FOAMLIU, flip=True))
    chips = [face_chip(image, f, ARCFACE_SIZE) for f in faces]
    _check_flip(plain, flipped, image, faces, chips, plain.embed_chips)
    # the pipeline's path (embed_chips) flips too
    assert np.allclose(flipped.embed_chips(chips), flipped.embed(image, faces), atol=1e-6)


@pytest.mark.shared
def test_paddle_flip_embeds_the_face_and_its_mirror(models_dir, face_and_image):
    try:
        import paddle.inference  # noqa: F401
    except ImportError:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("paddlepaddle is not installed; CI=true installs the paddle extra", pytrace=False)
        pytest.skip("paddlepaddle is not installed (pip install 'streamd[paddle]')")
    from streamd.faces.align import ARCFACE_SIZE, face_chip
    from streamd.faces.paddle_engine import PaddleEmbedder
    from streamd.settings import PaddleEmbedderSettings

    image, faces = face_and_image
    model = models_dir / "mobileface_v1.0_infer"
    plain = PaddleEmbedder(PaddleEmbedderSettings(model_dir=model))
    flipped = PaddleEmbedder(PaddleEmbedderSettings(model_dir=model, flip=True))
    chips = [face_chip(image, f, ARCFACE_SIZE) for f in faces]
    _check_flip(plain, flipped, image, faces, chips, plain.embed_chips)
    assert np.allclose(flipped.embed_chips(chips), flipped.embed(image, faces), atol=1e-5)


@pytest.mark.shared
def test_dlib_flip_embeds_the_chip_and_its_mirror(face_and_image):
    pytest.importorskip("dlib", reason="dlib is not installed (pip install 'streamd[dlib]')")
    from streamd.faces.factory import create_embedder
    from streamd.settings import DlibEmbedderSettings

    image, faces = face_and_image
    plain = create_embedder(DlibEmbedderSettings())
    flipped = create_embedder(DlibEmbedderSettings(flip=True))
    chips = plain.face_chips(image, faces)
    assert chips[0].shape == (150, 150, 3)
    # dlib's own chips give the very vectors its shape path gives, so flip starts from the same view
    assert np.allclose(plain.embed_face_chips(chips), plain.embed(image, faces), atol=1e-5)
    _check_flip(plain, flipped, image, faces, chips, plain.embed_face_chips)


# --------------------------------------------------------------------------- the command


@pytest.mark.shared
def test_eval_levers_cli_on_real_identities(tmp_path, models_dir, faces_dir):
    # given 24 real identities (linked, not copied) and foamliu's model standing in for both
    # embedders, so that fusion runs without the converted Paddle model
    root = tmp_path / "ids"
    root.mkdir()
    for folder in sorted((faces_dir / "identities").iterdir())[:24]:
        (root / folder.name).symlink_to(folder, target_is_directory=True)
    model = models_dir / FOAMLIU
    args = [
        "eval", "levers", "--root", str(root), "--embedders", "foamliu,mobileface",
        "--foamliu-model", str(model), "--mobileface-model", str(model),
        "--yunet-model", str(models_dir / YUNET), "--scrfd-model", str(models_dir / "scrfd_det_500m/det_500m.onnx"),
        "--seeds", "0-1", "--cache-dir", str(tmp_path / "cache"), "--timing-images", "2",
        "--json", str(tmp_path / "out.json"),
    ]
    # when it runs twice (the second time from the cache)
    first = CliRunner().invoke(cli, args)
    assert first.exit_code == 0, first.output
    data = json.loads((tmp_path / "out.json").read_text())
    second = CliRunner().invoke(cli, args)
    assert second.exit_code == 0, second.output
    # then every lever is reported for both seeds
    assert len(data["results"]) == 2 * len(default_levers(["foamliu", "mobileface"], 10))
    assert "scrfd + flip" in first.output and "fusion + scrfd + flip" in first.output
    assert "CPU cost" in first.output and data["costs_ms"]["foamliu embedding per face"] > 0
    # the baseline names most known probes of the report half rightly, and the threshold chosen on the
    # tuning half keeps its strangers within the allowed share
    base = next(r for r in data["results"] if r["lever"] == "baseline" and r["embedders"] == ["foamliu"])
    assert base["report"]["correct_rate"] > 0.8
    allowed = math.floor(0.01 * base["tune"]["unknown"] + 1e-9)
    assert base["tune"]["unknown_named"] <= allowed
    # caches hold detections and both embedders' views, and the second run got the same figures from them
    assert len(list((tmp_path / "cache").glob("levers-*.npz"))) == 3
    assert json.loads((tmp_path / "out.json").read_text())["results"] == data["results"]
