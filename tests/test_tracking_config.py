"""tracking: and snapshots: settings: defaults derived from the recogniser, errors a user reads."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from streamd.errors import ConfigError
from streamd.settings import load_settings
from streamd.tracking.config import TrackingSettings


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"tracking": {"max_lost": 3}}, "cfg.yaml: tracking.max_lost: unknown key"),
        ({"tracking": {"min_iou": 1.5}}, "cfg.yaml: tracking.min_iou: Input should be less than or equal to 1"),
        ({"tracking": {"max_lost_s": 0}}, "cfg.yaml: tracking.max_lost_s: Input should be greater than 0"),
        ({"tracking": {"min_votes": 0}}, "cfg.yaml: tracking.min_votes: Input should be greater than or equal to 1"),
        (
            {"tracking": {"iou_weight": 0, "feature_weight": 0}},
            "cfg.yaml: tracking: Value error, iou_weight and feature_weight cannot both be 0",
        ),
        (
            {"tracking": {"min_margin": 0.6}},
            "cfg.yaml: tracking: Value error, revise_margin (0.5) must be at least min_margin (0.6), "
            "or a name could be replaced on less evidence than it took to give it",
        ),
        ({"snapshots": {"max_size_mb": 0}}, "cfg.yaml: snapshots.max_size_mb: Input should be greater than 0"),
        ({"snapshots": {"jpeg_quality": 101}}, "cfg.yaml: snapshots.jpeg_quality: Input should be less than or equal to 100"),
        ({"snapshots": {"path": "/x"}}, "cfg.yaml: snapshots.path: unknown key"),
    ],
)
def test_bad_tracking_and_snapshot_settings_name_the_key(tmp_path: Path, section: dict, message: str):
    # given a config file with one bad value
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(section))
    # when / then
    with pytest.raises(ConfigError) as err:
        load_settings(path)
    assert str(err.value) == str(path.parent / message)


def test_tracking_settings_load_from_yaml_and_environment(tmp_path: Path, monkeypatch):
    # given a file setting two tracking keys and an environment override of one of them
    path = tmp_path / "cfg.yaml"
    path.write_text("tracking:\n  max_lost_s: 3.5\n  min_votes: 4\nsnapshots:\n  enabled: false\n")
    monkeypatch.setenv("STREAMD_TRACKING__MIN_VOTES", "5")
    # when
    s = load_settings(path)
    # then
    assert (s.tracking.max_lost_s, s.tracking.min_votes, s.snapshots.enabled) == (3.5, 5, False)


@pytest.mark.parametrize(
    ("settings", "rec_threshold", "same_person", "gate", "vote"),
    [
        # the gate is the embedder's own calibrated figure, whatever the naming threshold is
        (TrackingSettings(), 0.45, 0.40, 0.40, 0.45),
        (TrackingSettings(), 0.30, 0.40, 0.40, 0.30),
        (TrackingSettings(), 0.94, 0.93, 0.93, 0.94),
        (TrackingSettings(min_similarity=0.5, min_score=0.6), 0.45, 0.40, 0.5, 0.6),
    ],
)
def test_similarity_defaults_are_the_embedders_calibrated_figures(settings, rec_threshold, same_person, gate, vote):
    # given / when / then
    assert settings.similarity_gate(same_person) == pytest.approx(gate)
    assert settings.vote_threshold(rec_threshold) == pytest.approx(vote)
