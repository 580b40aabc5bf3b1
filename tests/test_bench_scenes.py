"""`streamd bench scenes`: the scene families' plans, per-sample scoring on hand-made tracks, a real tiny run."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from streamd.bench.scenes import (
    HARD,
    NORMAL,
    Appearance,
    Role,
    SceneClip,
    Walk,
    choose_strangers,
    crossing_plan,
    family_plan,
    glide,
    handoff_plan,
    light_field,
    pick_people,
    return_plan,
    turn_head,
    unhidden_share,
    walks_plan,
    worsen,
)
from streamd.demo.scene import Sprite
from streamd.bench.scenes_run import command
from streamd.bench.scoring import SampleRecord, ShownTrack, merge_scores, person_under, score_samples
from streamd.eval.split import half_of, identity_of

FPS = 5
SIZE = (1280, 720)


def box_at(x: float, y: float = 300.0, w: float = 100.0) -> tuple[float, float, float, float]:
    return (x, y, x + w, y + 1.2 * w)


def lane_clip() -> SceneClip:
    """10 s at 5 fps in one lane: Ana (enrolled) walks right 0-4 s and leaves at the right edge, Bob (enrolled)
    enters there at 4.2 s walking left until 8 s; Zed (never enrolled) stands at the left from 5 s to 9 s."""
    truth = []
    for k in range(50):
        t = k / FPS
        faces = []
        if t <= 4.0:
            faces.append(("Ana", box_at(100 + 250 * t), 1.0 if t >= 0.4 else 0.5))
        if 4.2 <= t <= 8.0:
            faces.append(("Bob", box_at(1100 - 200 * (t - 4.2)), 1.0))
        if 5.0 <= t <= 9.0:
            faces.append(("Zed", box_at(20, 100), 1.0))
        truth.append(tuple(faces))
    appearances = (Appearance("Ana", True, 0.0, 4.0, 0), Appearance("Bob", True, 4.2, 8.0, 0),
                   Appearance("Zed", False, 5.0, 9.0, 1))
    return SceneClip(Path("x.mp4"), *SIZE, FPS, 5, 50, appearances, tuple(truth))


def samples_for(clip: SceneClip, shown: dict[int, list[tuple[int, str, str | None]]]) -> list[SampleRecord]:
    """One SampleRecord per frame; ``shown[k]``: (track id, the person whose true box it has, label shown)."""
    out = []
    for k in range(clip.frames):
        boxes = {label: box for label, box, _ in clip.truth[k]}
        tracks = tuple(ShownTrack(tid, boxes[person], label) for tid, person, label in shown.get(k, []))
        out.append(SampleRecord(k / FPS, tracks, detected=len(tracks), embedded=1 if tracks else 0))
    return out


def test_a_name_carried_onto_the_next_walker_is_a_misnamed_and_carried_track() -> None:
    # given track 1 on Ana, named Ana from 1.0 s, then left on Bob (hand-off) still showing Ana
    clip = lane_clip()
    shown: dict[int, list[tuple[int, str, str | None]]] = {}
    for k in range(0, 21):  # 0-4.0 s
        shown.setdefault(k, []).append((1, "Ana", "Ana" if k >= 5 else None))
    for k in range(21, 41):  # 4.2-8.0 s: the same track on Bob
        shown.setdefault(k, []).append((1, "Bob", "Ana"))
    # when
    score = score_samples(samples_for(clip, shown), clip, family="handoff")
    # then Ana was named, 0.6 s after she was fully in view (0.4 s); Bob never; the track carried her name
    assert (score.named, score.never_named, score.enrolled_appearances) == (1, 1, 2)
    assert score.times_to_identify == pytest.approx((0.6,))
    assert (score.tracks, score.tracks_misnamed, score.carried_tracks) == (1, 1, 1)
    assert score.misnamed == ("track 1: Ana shown on Bob at 4.2 s",)
    assert score.carried == ("track 1: Ana, Bob",)
    assert score.missed == ("Bob (4.2-8.0 s)",)
    assert (score.strangers_named, score.stranger_appearances) == (0, 1)


def test_a_new_track_for_the_next_walker_and_a_stranger_named_are_told_apart() -> None:
    # given Ana's and Bob's own tracks, each named correctly, and Zed's track shown as Bob once
    clip = lane_clip()
    shown: dict[int, list[tuple[int, str, str | None]]] = {}
    for k in range(0, 21):
        shown.setdefault(k, []).append((1, "Ana", "Ana"))
    for k in range(21, 41):
        shown.setdefault(k, []).append((2, "Bob", "Bob" if k >= 23 else None))
    for k in range(25, 46):
        shown.setdefault(k, []).append((3, "Zed", "Bob" if k == 30 else None))
    # when
    score = score_samples(samples_for(clip, shown), clip)
    # then nothing was carried; the stranger's naming counts twice: stranger named, track misnamed
    assert (score.named, score.never_named) == (2, 0)
    assert score.carried_tracks == 0
    assert (score.strangers_named, score.tracks_misnamed, score.tracks) == (1, 1, 3)
    assert score.times_to_identify == pytest.approx((0.0, 0.4))  # Ana named before fully in view counts as 0
    assert score.embeddings_per_sample == pytest.approx(46 / 50)  # one embedding on every sample 0-9.0 s


def test_a_box_belongs_to_the_face_it_overlaps_most_and_never_to_a_hidden_one() -> None:
    # given a near face drawn over a far one that it hides, and a face beside them
    near, far, side = box_at(500, 300, 130), box_at(520, 290, 90), box_at(900)
    faces = (("Far", far, 0.05), ("Near", near, 1.0), ("Side", side, 1.0))
    # then a box on the near face is the near person's, though it overlaps the far one's true box too
    assert person_under(near, faces, SIZE) == 1
    assert person_under(box_at(520, 290, 90), faces, SIZE) == 1  # the far face is hidden: the near one is seen
    assert person_under(box_at(200), faces, SIZE) is None
    # and a face half out of the frame is compared with its part in view
    edge = (("Edge", (1230.0, 300.0, 1330.0, 420.0), 0.5),)
    assert person_under((1230.0, 300.0, 1280.0, 420.0), edge, SIZE) == 0


def test_the_near_head_hides_the_far_face_in_the_truth() -> None:
    far = box_at(520, 290, 90)
    assert unhidden_share(far, [], SIZE) == 1.0
    assert unhidden_share(far, [box_at(500, 300, 130)], SIZE) == 0.0
    assert 0.4 < unhidden_share(far, [box_at(600, 300, 130)], SIZE) < 0.6  # its left half shows
    assert unhidden_share((-50.0, 0.0, 50.0, 100.0), [], SIZE) == 0.5


def test_scores_of_several_families_add_up() -> None:
    clip = lane_clip()
    one = score_samples(samples_for(clip, {k: [(1, "Ana", "Ana")] for k in range(21)}), clip, family="walks")
    total = merge_scores([one, one], "all")
    assert (total.family, total.named, total.enrolled_appearances, total.samples) == ("all", 2, 4, 100)
    assert total.times_to_identify == one.times_to_identify * 2


def roles(n: int) -> list[Role]:
    return [Role(f"p{k}", k % 4 != 3, Path(f"p{k}/0.jpg"), (Path(f"p{k}/g.jpg"),),
                 (Path(f"p{k}/0.jpg"), Path(f"p{k}/1.jpg"))) for k in range(n)]


def test_glide_moves_at_a_steady_pace_with_a_keyframe_on_every_frame() -> None:
    path = glide([(1.0, 0.0, 100.0, 80.0), (2.0, 250.0, 100.0, 80.0)], 25)
    assert len(path) == 26 and path[0].t == 1.0 and path[-1].t == 2.0
    steps = {round(b.cx - a.cx, 6) for a, b in zip(path, path[1:])}
    assert steps == {10.0}


def test_walks_are_back_to_back_in_two_lanes_with_a_probe_photo_each() -> None:
    walks = walks_plan(roles(40), seconds=90.0, seed=3)
    assert 26 <= len(walks) <= 36
    assert {w.lane for w in walks} == {0, 1}
    for lane in (0, 1):
        mine = [w for w in walks if w.lane == lane]
        gaps = [b.start_s - a.end_s for a, b in zip(mine, mine[1:])]
        assert all(0.15 <= g <= 1.05 for g in gaps)
    assert all(w.image.name != "g.jpg" for w in walks)  # never a gallery photo
    assert any(not w.enrolled for w in walks)


def test_in_a_handoff_the_next_walker_enters_where_the_last_left_within_a_sample_interval() -> None:
    walks = handoff_plan(roles(12), people=12, sample_fps=5.0, seed=2)
    widths = sorted({round(w.face_w) for w in walks})
    assert widths == [60, 90, 130]
    for lane in {w.lane for w in walks}:
        mine = [w for w in walks if w.lane == lane]
        for a, b in zip(mine, mine[1:]):
            assert 0.0 <= b.start_s - a.end_s <= 0.2 + 1e-9
            assert b.path[0].cx == pytest.approx(a.path[-1].cx)  # the same edge
            assert (b.path[-1].cx - b.path[0].cx) * (a.path[-1].cx - a.path[0].cx) < 0  # walking back


def test_crossing_pairs_walk_towards_each_other_and_returners_come_back_through_their_edge() -> None:
    pairs = crossing_plan(roles(8), people=8, seed=1)
    first = [w for w in pairs if w.lane == 0][:2]
    assert first[0].start_s == first[1].start_s
    assert (first[0].path[-1].cx - first[0].path[0].cx) * (first[1].path[-1].cx - first[1].path[0].cx) < 0
    assert first[0].face_w != first[1].face_w
    back = return_plan(roles(4), people=4, seed=1)
    by_label: dict[str, list] = {}
    for w in back:
        by_label.setdefault(w.label, []).append(w)
    for a, b in by_label.values():
        assert 1.0 <= b.start_s - a.end_s <= 3.0
        assert b.path[0].cx == pytest.approx(a.path[-1].cx)


def unit(*values: float) -> np.ndarray:
    v = np.asarray(values, dtype=np.float32)
    return v / np.linalg.norm(v)


def test_look_alike_strangers_are_the_candidates_closest_to_an_enrolled_person() -> None:
    # given a gallery of two enrolled people along the first two axes, and five candidates: two close
    # to someone enrolled (one of them only by their second photo), two far, one without a usable photo
    gallery = np.stack([unit(1, 0, 0, 0), unit(0, 1, 0, 0)])
    candidates = {
        "near_ana": np.stack([unit(0.9, 0.1, 0.3, 0)]),
        "near_bob_2nd": np.stack([unit(0, 0, 1, 0), unit(0.1, 0.8, 0, 0.3)]),
        "far1": np.stack([unit(0, 0, 1, 0.2)]),
        "far2": np.stack([unit(0, 0, 0.3, 1)]),
        "no_face": np.empty((0, 4), np.float32),
    }
    # when three strangers are wanted, two thirds of them look-alikes
    picked = choose_strangers(candidates, gallery, ["Ana", "Bob"], 3, lookalike_share=2 / 3, seed=1)
    # then the two closest come first, with whom they are closest and how close, and one more at random
    assert [(x.label, x.closest, x.lookalike) for x in picked[:2]] == [("near_ana", "Ana", True),
                                                                      ("near_bob_2nd", "Bob", True)]
    assert picked[0].similarity == pytest.approx(float(candidates["near_ana"][0] @ gallery[0]), abs=1e-4)
    assert picked[1].similarity == pytest.approx(float(candidates["near_bob_2nd"][1] @ gallery[1]), abs=1e-4)
    assert len(picked) == 3 and not picked[2].lookalike and picked[2].label in {"far1", "far2", "no_face"}
    # and with no share for look-alikes none is chosen for it; asking for more than there are is an error
    assert not any(x.lookalike for x in choose_strangers(candidates, gallery, ["Ana", "Bob"], 3,
                                                         lookalike_share=0.0))
    with pytest.raises(ValueError):
        choose_strangers(candidates, gallery, ["Ana", "Bob"], 6, lookalike_share=1.0)


def test_the_hard_plans_have_small_faces_blur_turned_heads_and_hand_offs_both_ways() -> None:
    cast = roles(40)
    hard = {f: family_plan(f, cast, seed=7, difficulty=HARD) for f in ("walks", "handoff", "crossing", "return")}
    every = [w for walks in hard.values() for w in walks]
    # faces under 60 px (at 720 lines), but none under the 40 px the quality gate lets through
    small = [w for w in every if w.face_w < 60]
    assert len(small) >= 0.1 * len(every) and min(w.face_w for w in every) >= 40
    assert any(w.blur_px > 0 for w in every) and all(w.blur_px == 0 or w.blur_px >= 5 for w in every)
    assert any(abs(w.yaw) >= 15 for w in every) and max(abs(w.yaw) for w in every) <= 30
    assert all(w.gamma > 1.15 and w.contrast < 1.0 for w in every)  # dimmer and flatter than the normal plan
    assert HARD.crf > NORMAL.crf and HARD.light_floor < 1.0
    # hand-offs at both side edges, and the next walker entering both before and after the last one left
    gaps, edges = [], set()
    for lane in {w.lane for w in hard["handoff"]}:
        mine = [w for w in hard["handoff"] if w.lane == lane]
        for a, b in zip(mine, mine[1:]):
            gaps.append(b.start_s - a.end_s)
            assert b.path[0].cx == pytest.approx(a.path[-1].cx)  # the same edge
            edges.add(a.path[-1].cx > 640)
    assert edges == {True, False}
    assert min(gaps) < 0 < max(gaps) and all(-0.2 - 1e-9 <= g <= 0.2 + 1e-9 for g in gaps)
    assert min(w.face_w for w in hard["handoff"]) < 60
    # and a returning person comes back with another photo
    back: dict[str, list[Walk]] = {}
    for w in hard["return"]:
        back.setdefault(w.label, []).append(w)
    assert any(a.image != b.image for a, b in back.values())
    # while the normal plan has none of it
    normal = family_plan("walks", cast, seed=7, difficulty=NORMAL)
    assert all(w.face_w >= 80 * 0.95 and w.blur_px == 0 and w.yaw == 0 and w.contrast == 1.0 for w in normal)


def test_a_turned_head_is_narrower_and_its_far_side_shorter() -> None:
    # given a 100 x 120 sprite, opaque everywhere, its face box in the middle
    sprite = Sprite(np.full((120, 100, 3), 200, np.uint8), np.ones((120, 100), np.float32), (25.0, 30.0, 75.0, 90.0))
    # when turned by 30 degrees
    turned = turn_head(sprite, 30.0)
    # then it is cos(30) as wide, the face box too, and the right (far) side is shorter than the left
    assert turned.alpha.shape == (120, round(100 * np.cos(np.radians(30))))
    assert turned.face_box[2] - turned.face_box[0] == pytest.approx(50 * np.cos(np.radians(30)), rel=0.05)
    column = turned.alpha > 0.5
    assert column[:, 2].sum() > column[:, -3].sum()
    # and motion blur smears it sideways only; the uneven light is darkest at the floor given
    walk = Walk("a", True, 0, Path("a.jpg"), glide([(0, 0, 0, 50.0), (1, 100, 0, 50.0)], 5), blur_px=10.0)
    striped = Sprite(np.tile(np.array([0, 255], np.uint8).repeat(5)[None, :, None], (120, 10, 3)),
                     np.ones((120, 100), np.float32), sprite.face_box)
    smeared = worsen(striped, walk)
    assert smeared.bgr[:, 30:70].std() < 0.2 * striped.bgr[:, 30:70].std()
    gain = light_field((320, 180), 0.45, seed=2)
    assert gain is not None and gain.shape == (180, 320, 1) and 0.45 <= gain.min() < 0.5 and gain.max() <= 1.0
    assert light_field((320, 180), 1.0) is None


@pytest.mark.shared
def test_casts_come_from_the_chosen_half(faces_dir: Path) -> None:
    cast = pick_people(faces_dir / "identities", 20, half="report", seed=5)
    assert len(cast) == 20 and sum(not r.enrolled for r in cast) == 5
    assert all(half_of(identity_of(r.label)) == "report" for r in cast)
    for r in cast:
        assert len(r.gallery) == (2 if r.enrolled else 0)
        assert r.probes and not set(r.probes) & set(r.gallery)


@pytest.mark.shared
@pytest.mark.parametrize("difficulty", ["normal", "hard"])
def test_the_command_prints_a_consistent_table_for_a_tiny_handoff(tmp_path: Path, models_dir: Path,
                                                                  faces_dir: Path, difficulty: str) -> None:
    # given a hand-off clip of four people (one never enrolled), the onnx engine
    # (foamliu's MobileFaceNet is ONNX already: no conversion of the Paddle model in the test's work dir)
    args = ["--family", "handoff", "--people", "4", "--pool", "4", "--recogniser", "mobilefacenet-foamliu",
            "--difficulty", difficulty,
            "--models-dir", str(models_dir), "--faces-dir", str(faces_dir), "--work-dir", str(tmp_path / "work"),
            "--json", str(tmp_path / "out.json")]
    # when
    result = CliRunner().invoke(command, args, catch_exceptions=False)
    # then
    assert result.exit_code == 0, result.output
    assert "of the report half" in result.output and f"difficulty {difficulty}" in result.output
    rows = ["enrolled appearances named", "never named", "tracks shown under someone else's name",
            "strangers named", "carried tracks", "time to identify", "embeddings per sample"]
    for row in rows:
        assert f"  {row}" in result.output
    data = json.loads((tmp_path / "out.json").read_text())
    assert data["half"] == "report" and data["difficulty"] == difficulty
    if difficulty == "hard":
        # the one never-enrolled person is the report half's closest to an enrolled one, chosen with this engine
        (stranger,) = data["strangers"]
        assert stranger["lookalike"] and stranger["closest"] and -1.0 <= stranger["similarity"] <= 1.0
        assert "1 of 1 look-alikes" in result.output and data["difficulty_settings"]["crf"] > 23
    else:
        assert data["strangers"] == []
    f = data["families"]["handoff"]
    assert f["enrolled_appearances"] + f["stranger_appearances"] == 4
    assert f["named"] + f["never_named"] == f["enrolled_appearances"]
    assert re.search(rf"enrolled appearances named +{f['named']}/{f['enrolled_appearances']}\n", result.output)
    assert 0 <= f["tracks_misnamed"] <= f["tracks"] and 0 <= f["carried_tracks"] <= f["tracks"]
    assert f["strangers_named"] <= f["stranger_appearances"]
    assert len(f["times_to_identify"]) <= f["named"]
    assert f["samples"] > 0 and f["embedded"] <= f["detected"]
    assert f["tracks"] >= 1 and f["detected"] > 0


def test_set_overrides_become_one_nested_settings_dict():
    from streamd.bench.scenes_run import parse_overrides

    # given / when
    out = parse_overrides(["tracking.embed_budget=12", "engine.quality.min_blur_var=3.5", "tracking.template=false"])
    # then
    assert out == {"tracking": {"embed_budget": 12, "template": False}, "engine": {"quality": {"min_blur_var": 3.5}}}
