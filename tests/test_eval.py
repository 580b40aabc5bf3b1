"""`streamd eval pairs|ident`: list parsing and scoring (units), and small real runs through the CLI.

The calibration arithmetic and `eval gate` are tested in test_eval_gate.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from streamd.cli import cli
from streamd.eval.features import DatasetError, ImageFeature
from streamd.eval.ident import list_people, score_probes, split_people, threshold_grid
from streamd.eval.pairs import Pair, best_threshold, detect_format, read_pairs, verify

# --------------------------------------------------------------------------- parsing


@pytest.fixture()
def lfw_tree(tmp_path: Path) -> Path:
    """An LFW-style tree <Name>/<Name>_%04d.jpg with (empty) files."""
    for name, numbers in {"Ann_Lee": (1, 2, 13), "Bo_Ma": (1, 4)}.items():
        (tmp_path / name).mkdir()
        for n in numbers:
            (tmp_path / name / f"{name}_{n:04d}.jpg").write_bytes(b"x")
    return tmp_path


def test_csv_pairs_with_header_and_extra_columns(lfw_tree):
    # given a CSV with a header row, an extra column and paths relative to the root
    f = lfw_tree / "pairs.csv"
    f.write_text(
        "path_a,path_b,same,note\n"
        "Ann_Lee/Ann_Lee_0001.jpg,Ann_Lee/Ann_Lee_0002.jpg,1,x\n"
        "Ann_Lee/Ann_Lee_0001.jpg,Bo_Ma/Bo_Ma_0004.jpg,0,y\n"
    )

    # when read (the root defaults to the list's folder)
    pairs = read_pairs(f)

    # then both pairs come with resolved paths and labels
    assert pairs == [
        Pair(lfw_tree / "Ann_Lee/Ann_Lee_0001.jpg", lfw_tree / "Ann_Lee/Ann_Lee_0002.jpg", True),
        Pair(lfw_tree / "Ann_Lee/Ann_Lee_0001.jpg", lfw_tree / "Bo_Ma/Bo_Ma_0004.jpg", False),
    ]


def test_csv_pairs_without_header(lfw_tree):
    f = lfw_tree / "list.csv"
    f.write_text("Ann_Lee/Ann_Lee_0001.jpg,Ann_Lee/Ann_Lee_0013.jpg,true\n")
    assert read_pairs(f) == [Pair(lfw_tree / "Ann_Lee/Ann_Lee_0001.jpg", lfw_tree / "Ann_Lee/Ann_Lee_0013.jpg", True)]


def test_lfw_pairs_with_count_line(lfw_tree, tmp_path):
    # given an LFW pairs file (count line, a same and a different line) kept apart from the images
    lists = tmp_path / "lists"
    lists.mkdir()
    f = lists / "pairsDevTest.txt"
    f.write_text("2\nAnn_Lee\t1\t13\nAnn_Lee\t2\tBo_Ma\t1\n")

    # when read with the image root
    pairs = read_pairs(f, root=lfw_tree)

    # then the LFW file naming is applied
    assert pairs == [
        Pair(lfw_tree / "Ann_Lee/Ann_Lee_0001.jpg", lfw_tree / "Ann_Lee/Ann_Lee_0013.jpg", True),
        Pair(lfw_tree / "Ann_Lee/Ann_Lee_0002.jpg", lfw_tree / "Bo_Ma/Bo_Ma_0001.jpg", False),
    ]


def test_paddlex_pair_label_file(lfw_tree):
    f = lfw_tree / "pair_label.txt"
    f.write_text("Ann_Lee/Ann_Lee_0001.jpg Ann_Lee/Ann_Lee_0002.jpg 1\nAnn_Lee/Ann_Lee_0001.jpg Bo_Ma/Bo_Ma_0001.jpg 0\n")
    assert detect_format(f, f.read_text()) == "paddlex"
    assert [p.same for p in read_pairs(f)] == [True, False]


@pytest.mark.parametrize(
    "name, text, fmt",
    [
        ("p.txt", "a.jpg,b.jpg,1\n", "csv"),
        ("p.txt", "10\t300\nAnn_Lee\t1\t2\n", "lfw"),
        ("p.txt", "Ann_Lee 1 2\n", "lfw"),
        ("p.txt", "a.png b.png 0\n", "paddlex"),
        ("p.csv", "anything", "csv"),
    ],
)
def test_format_detection(name, text, fmt):
    assert detect_format(Path(name), text) == fmt


@pytest.mark.parametrize(
    "name, text, fmt, message",
    [
        ("p.csv", "a.jpg,b.jpg\n", "auto", "p.csv line 1: expected path_a,path_b,same, got 2 field(s)"),
        ("p.csv", "a,b,same\na.jpg,b.jpg,maybe\n", "auto", "p.csv line 2: the label 'maybe' is not 1/0"),
        ("p.txt", "3\nAnn_Lee 1\n", "lfw", "p.txt line 2: expected 'name n1 n2' or 'name1 n1 name2 n2'"),
        ("p.txt", "Ann_Lee 1 x\n", "lfw", "p.txt line 1: image number 'x' is not a number"),
        ("p.txt", "a.jpg b.jpg\n", "paddlex", "p.txt line 1: expected 'image1 image2 label'"),
        ("p.txt", "hello\n", "auto", "p.txt: cannot tell the pairs format"),
        ("p.txt", "\n\n", "lfw", "p.txt: no pairs found"),
        ("p.csv", "Ann_Lee/Ann_Lee_0001.jpg,Ann_Lee/Ann_Lee_0009.jpg,1\n", "auto",
         "p.csv: 1 listed image(s) not found, e.g. "),
    ],
    ids=["csv-short", "csv-label", "lfw-fields", "lfw-number", "paddlex-fields", "unknown", "empty", "missing-image"],
)
def test_bad_pairs_lists_say_what_and_where(lfw_tree, name, text, fmt, message):
    # given a malformed pairs list
    f = lfw_tree / name
    f.write_text(text)

    # when read
    with pytest.raises(DatasetError) as err:
        read_pairs(f, fmt=fmt)

    # then one line names the file, the line and the problem
    assert str(err.value).startswith(f"{lfw_tree}/{message}") and "\n" not in str(err.value)


def test_missing_pairs_file(tmp_path):
    with pytest.raises(DatasetError, match=f"{tmp_path}/none.csv: pairs file not found"):
        read_pairs(tmp_path / "none.csv")


# --------------------------------------------------------------------------- scoring


def test_best_threshold_splits_same_from_different():
    # given scores where same pairs score high except one
    scores = np.array([0.9, 0.8, 0.7, 0.3, 0.2, 0.75])
    same = np.array([True, True, True, False, False, False])

    # when the best threshold is searched over 6 pairs
    t, acc = best_threshold(scores, same, total=6)

    # then it lies between 0.75 and 0.8 (5 of 6 right), or between 0.3 and 0.7 (also 5 of 6)
    assert acc == pytest.approx(5 / 6)
    assert (0.75 < t < 0.8) or (0.3 < t < 0.7)


def test_verify_counts_unanswered_pairs_as_wrong_and_never_accepted():
    # given four pairs, one same pair without a face
    pairs = [Pair(Path("a"), Path("b"), True), Pair(Path("c"), Path("d"), True),
             Pair(Path("e"), Path("f"), False), Pair(Path("g"), Path("h"), False)]
    scores = [0.9, None, 0.2, 0.6]

    # when verified at 0.5
    r = verify(pairs, scores, 0.5)

    # then the unanswered pair costs accuracy and TAR, and the 0.6 different pair is a false accept
    assert r.unanswered == 1
    assert r.best_accuracy == pytest.approx(3 / 4)
    assert (r.accuracy, r.tar, r.far) == (pytest.approx(2 / 4), pytest.approx(1 / 2), pytest.approx(1 / 2))


def test_split_is_seeded_and_holds_out_the_share(tmp_path):
    # given ten people with five images each
    for i in range(10):
        d = tmp_path / f"P{i}"
        d.mkdir()
        for j in range(5):
            (d / f"{j}.jpg").write_bytes(b"x")
    (tmp_path / "empty").mkdir()
    people = list_people(tmp_path)

    # when split twice with one seed and once with another
    a = split_people(people, enrol=2, probes=2, unknown_share=0.3, seed=1)
    b = split_people(people, enrol=2, probes=2, unknown_share=0.3, seed=1)
    c = split_people(people, enrol=2, probes=0, unknown_share=0.3, seed=2)

    # then the same seed gives the same split, 3 of 10 are unknown, enrol/probe counts hold
    assert a == b and len(a.unknown_people) == 3 and "empty" not in people
    assert all(len(v) == 2 for v in a.gallery.values()) and len(a.gallery) == 7
    assert len(a.known_probes) == 7 * 2 and len(a.unknown_probes) == 3 * 2
    assert len(c.known_probes) == 7 * 3 and len(c.unknown_probes) == 3 * 5
    assert not set(a.unknown_people) & set(a.gallery)


def test_score_probes_uses_the_real_library_and_decision():
    from streamd.index.library import FeatureLibrary

    # given a library with two people on orthogonal axes
    lib = FeatureLibrary.create(3, fingerprint="t")
    lib.add(np.eye(3, dtype=np.float32)[:2], ["ann", "bo"])
    unit = lambda v: ImageFeature(np.asarray(v, np.float32) / np.linalg.norm(v), "ok")  # noqa: E731
    known = [("ann", unit([1, 0.1, 0])), ("bo", unit([0.9, 0.2, 0])), ("bo", ImageFeature(None, "no_face"))]
    unknown = [("cy", unit([0.1, 0.1, 1])), ("dee", unit([0.6, 0.1, 0.5]))]

    # when scored at two thresholds
    low, high = score_probes(lib, known, unknown, [0.5, 0.9], margin=0.05, topk=2)

    # then: ann named, bo wrongly named as ann, the faceless probe rejected; dee falsely accepted only at 0.5
    assert (low.correct, low.wrong, low.rejected, low.false_accept) == (1, 1, 1, 1)
    assert (high.correct, high.wrong, high.rejected, high.false_accept) == (1, 1, 1, 0)


def test_threshold_grid_marks_the_default():
    assert threshold_grid(0.45, ()) == [0.3, 0.35, 0.4, 0.45, 0.5, 0.55]
    assert threshold_grid(0.91, ()) == [0.88, 0.89, 0.9, 0.91, 0.92, 0.93]
    assert threshold_grid(0.45, (0.2, 0.9)) == [0.2, 0.45, 0.9]


# --------------------------------------------------------------------------- real runs through the CLI

LFW = "pairs/lfw_view1_devtest/images"
SMALL_PAIRS = [
    ("Abdullah_Gul/Abdullah_Gul_0013.jpg", "Abdullah_Gul/Abdullah_Gul_0014.jpg", 1),
    ("Abdullatif_Sener/Abdullatif_Sener_0001.jpg", "Abdullatif_Sener/Abdullatif_Sener_0002.jpg", 1),
    ("Adel_Al-Jubeir/Adel_Al-Jubeir_0001.jpg", "Adel_Al-Jubeir/Adel_Al-Jubeir_0003.jpg", 1),
    ("Abdullah_Gul/Abdullah_Gul_0013.jpg", "Adel_Al-Jubeir/Adel_Al-Jubeir_0001.jpg", 0),
    ("Abdullatif_Sener/Abdullatif_Sener_0001.jpg", "Abdullah_Gul/Abdullah_Gul_0014.jpg", 0),
    ("Adel_Al-Jubeir/Adel_Al-Jubeir_0003.jpg", "Abdullatif_Sener/Abdullatif_Sener_0002.jpg", 0),
]


def _name_number(rel: str) -> tuple[str, int]:
    name, file = rel.split("/")
    return name, int(file.rsplit("_", 1)[1].split(".")[0])


def _write_lists(tmp_path: Path) -> dict[str, Path]:
    csv_file = tmp_path / "pairs.csv"
    csv_file.write_text("path_a,path_b,same\n" + "".join(f"{a},{b},{s}\n" for a, b, s in SMALL_PAIRS))
    lfw_lines = []
    for a, b, s in SMALL_PAIRS:
        (na, ia), (nb, ib) = _name_number(a), _name_number(b)
        lfw_lines.append(f"{na}\t{ia}\t{ib}" if s else f"{na}\t{ia}\t{nb}\t{ib}")
    lfw_file = tmp_path / "pairs.txt"
    lfw_file.write_text(f"{len(SMALL_PAIRS)}\n" + "\n".join(lfw_lines) + "\n")
    paddlex_file = tmp_path / "pair_label.txt"
    paddlex_file.write_text("".join(f"{a} {b} {s}\n" for a, b, s in SMALL_PAIRS))
    return {"csv": csv_file, "lfw": lfw_file, "paddlex": paddlex_file}


def _onnx_args(models_dir: Path) -> list[str]:
    return [
        "--detector", "onnx", "--det-model", "yunet",
        "--det-model-path", str(models_dir / "yunet_2023mar/face_detection_yunet_2023mar.onnx"),
        "--embedder", "onnx", "--emb-model-path", str(models_dir / "mobilefacenet_foamliu/MobileFaceNet.onnx"),
    ]


@pytest.mark.shared
@pytest.mark.parametrize("fmt", ["csv", "lfw", "paddlex"])
def test_eval_pairs_cli_on_real_lfw_pairs(tmp_path, models_dir, faces_dir, fmt):
    # given a small pairs list in each format over real LFW images
    lists = _write_lists(tmp_path)
    out = tmp_path / "result.json"

    # when evaluated with the ONNX engine
    result = CliRunner().invoke(
        cli,
        ["eval", "pairs", "--pairs", str(lists[fmt]), "--root", str(faces_dir / LFW), *_onnx_args(models_dir),
         "--json", str(out)],
    )

    # then every pair is answered correctly at the best threshold and the report is complete
    assert result.exit_code == 0, result.output
    assert "6 pairs (3 same, 3 different)" in result.output
    assert "accuracy at the best threshold  100.0 %" in result.output
    data = json.loads(out.read_text())
    assert data["pairs"] == 6 and data["unanswered"] == 0 and data["best_accuracy"] == 1.0
    assert data["threshold"] == 0.45 and len(data["scores"]) == 6


@pytest.mark.shared
def test_eval_pairs_cli_with_dlib_and_a_feature_cache(tmp_path, faces_dir):
    # given the CSV list and a cache file
    lists = _write_lists(tmp_path)
    cache = tmp_path / "features.npz"
    args = ["eval", "pairs", "--pairs", str(lists["csv"]), "--root", str(faces_dir / LFW), "--cache", str(cache)]

    # when evaluated twice with the default (dlib) engine
    first = CliRunner().invoke(cli, [*args, "--json", str(tmp_path / "a.json")])
    second = CliRunner().invoke(cli, [*args, "--json", str(tmp_path / "b.json")])

    # then the cache was written, and the second run (from the cache) reports the same figures
    assert first.exit_code == 0, first.output
    assert second.exit_code == 0, second.output
    assert cache.is_file()
    a, b = json.loads((tmp_path / "a.json").read_text()), json.loads((tmp_path / "b.json").read_text())
    assert a["scores"] == b["scores"] and a["best_accuracy"] == 1.0
    assert "dlib-hog + dlib" in first.output and "0.910" in first.output


@pytest.mark.shared
def test_eval_pairs_reports_images_without_a_face(tmp_path, models_dir, faces_dir):
    # given a pair whose second image is a photo without a face
    root = tmp_path / "root"
    root.mkdir()
    (root / "face.jpg").symlink_to(faces_dir / LFW / SMALL_PAIRS[0][0])
    (root / "coffee.png").symlink_to(faces_dir / "negatives/skimage/coffee.png")
    lst = tmp_path / "p.csv"
    lst.write_text("face.jpg,coffee.png,1\nface.jpg,face.jpg,1\n")

    # when evaluated
    result = CliRunner().invoke(cli, ["eval", "pairs", "--pairs", str(lst), "--root", str(root), *_onnx_args(models_dir)])

    # then the faceless image is listed and its pair counted as wrong
    assert result.exit_code == 0, result.output
    assert "images without a usable face: 1; pairs that cannot be answered (counted as wrong): 1" in result.output
    assert f"no_face    {root / 'coffee.png'}" in result.output
    assert "accuracy at the best threshold   50.0 %" in result.output


@pytest.mark.shared
def test_eval_ident_cli_on_real_identities(tmp_path, models_dir, faces_dir):
    # given eight people with five images each (a symlinked subset of identities/)
    source = faces_dir / "identities"
    people = ["Antonio_Palocci", "Bill_Simon", "David_Beckham", "Gerhard_Schroeder",
              "Howard_Dean", "Hugo_Chavez", "Jennifer_Lopez", "Serena_Williams"]
    root = tmp_path / "ids"
    for name in people:
        (root / name).mkdir(parents=True)
        for img in sorted((source / name).glob("*.jpg"))[:5]:
            (root / name / img.name).symlink_to(img)
    out = tmp_path / "ident.json"

    # when identified with 2 enrolled images each and a quarter of the people held out
    result = CliRunner().invoke(
        cli,
        ["eval", "ident", "--root", str(root), "--half", "all", "--enrol", "2", "--unknown-share", "0.25",
         "--seed", "3", *_onnx_args(models_dir), "--json", str(out)],
    )

    # then the table lists the thresholds, marks the configured one, and the JSON holds the counts
    assert result.exit_code == 0, result.output
    assert "8 people, 6 enrolled with up to 2 image(s) each, 2 held out as unknown (seed 3)" in result.output
    assert "half: all (8 identities of 8 folders, same-person folders merged)" in result.output
    assert "*  0.450" in result.output
    data = json.loads(out.read_text())
    assert data["gallery_vectors"] == 12 and data["known_probes"] == 18 and data["unknown_probes"] == 6
    at_default = next(r for r in data["results"] if r["threshold"] == 0.45)
    assert at_default["correct"] + at_default["wrong"] + at_default["rejected"] == 18
    assert at_default["correct_rate"] >= 0.8
    assert at_default["false_accept_rate"] <= 1 / 6
    assert data["half"] == "all" and data["identities"] == 8


@pytest.mark.shared
def test_eval_ident_cli_uses_one_half_and_calibrates_the_threshold(tmp_path, models_dir, faces_dir):
    from streamd.eval.gate import allowed_count
    from streamd.eval.split import half_of, identity_of

    # given ten folders, two of them one person (Jennifer_Aniston = deepface_id02), five images each
    folders = ["Antonio_Palocci", "Bill_Simon", "David_Beckham", "Gerhard_Schroeder", "Howard_Dean", "Hugo_Chavez",
               "Jennifer_Lopez", "Serena_Williams", "Jennifer_Aniston", "deepface_id02"]
    root = tmp_path / "ids"
    for name in folders:
        (root / name).mkdir(parents=True)
        for img in sorted((faces_dir / "identities" / name).glob("*.jpg"))[:5]:
            (root / name / img.name).symlink_to(img)
    tune = sorted({identity_of(n) for n in folders if half_of(identity_of(n)) == "tune"})
    out = tmp_path / "ident.json"

    # when identified on the tuning half, with no unknown probe allowed a name
    result = CliRunner().invoke(
        cli,
        ["eval", "ident", "--root", str(root), "--half", "tune", "--unknown-share", "0.3", "--seed", "1",
         "--max-false-accept", "0", *_onnx_args(models_dir), "--json", str(out)],
    )

    # then only the tuning half's identities take part, the two Aniston folders as one person
    assert result.exit_code == 0, result.output
    assert f"half: tune ({len(tune)} identities of 10 folders, same-person folders merged)" in result.output
    assert "lowest threshold naming at most 0 % of unknown probes (step 0.005): " in result.output
    data = json.loads(out.read_text())
    assert data["half"] == "tune" and data["identities"] == len(tune) == data["people"]
    assert "deepface_id02" not in data["unknown_people"]
    # and the calibrated threshold is the lowest 0.005 step within the share: the grid agrees on every side
    calibrated, allowed = data["calibrated"], allowed_count(data["unknown_probes"], 0.0)
    assert calibrated["false_accept"] == allowed == 0 and data["max_false_accept"] == 0.0
    above = [row["threshold"] >= calibrated["threshold"] - 1e-9 for row in data["results"]]
    assert any(above) and not all(above)  # this data has grid rows on both sides
    for row, is_above in zip(data["results"], above):
        assert (row["false_accept"] <= allowed) == is_above, row


@pytest.mark.parametrize(
    "args, message",
    [
        (["eval", "ident", "--root", "{tmp}/nowhere"], "{tmp}/nowhere: not a folder"),
        (["eval", "ident", "--root", "{tmp}"], "{tmp}: no <ID>/ folders with images found"),
        (["eval", "pairs", "--pairs", "{tmp}/none.csv"], "{tmp}/none.csv: pairs file not found"),
    ],
)
def test_eval_bad_inputs(tmp_path, args, message):
    # when a command is given a missing or empty dataset
    result = CliRunner().invoke(cli, [a.format(tmp=tmp_path) for a in args])

    # then it fails with the one-line message
    assert isinstance(result.exception, DatasetError)
    assert str(result.exception).startswith(message.format(tmp=tmp_path))


def test_eval_bad_engine_override_names_the_option(tmp_path):
    from streamd.errors import ConfigError

    lst = tmp_path / "p.csv"
    lst.write_text("a.jpg,b.jpg,1\n")
    result = CliRunner().invoke(cli, ["eval", "pairs", "--pairs", str(lst), "--det-model", "yunet"])
    assert isinstance(result.exception, ConfigError)
    assert str(result.exception).startswith("command-line engine options: engine.detector.dlib.model:")
