"""Settings of the per-camera tracker and the per-track identity decision (``tracking:``).

This module imports pydantic only, so loading settings never pulls in scipy.

Similarity thresholds depend on the embedder (dlib's cosine similarities between different
people sit far higher than MobileFaceNet's), so the similarity knobs default to values of the
embedder in use rather than to fixed numbers: the vote threshold to the recognition threshold
(``index.rec_threshold`` or the embedder's calibrated default), the same-person gate to the
embedder's calibrated ``same_person_threshold`` (measured on pairs of different people, see
docs/accuracy.md), never one derived from the other.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator


class TrackingSettings(BaseModel):
    """How faces are followed across samples of one camera and how a track gets its name."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    # ---- association
    iou_weight: float = Field(
        0.4,
        ge=0.0,
        description="Weight of box overlap (IoU with motion prediction) in the association cost when "
        "features are known too. Higher trusts positions more: cheaper, but overlapping or crossing "
        "faces may swap tracks.",
    )
    feature_weight: float = Field(
        0.6,
        ge=0.0,
        description="Weight of feature similarity in the association cost (used when faces overlap or a "
        "lost track is re-found). Higher keeps identities through crossings but trusts noisy features "
        "of poor faces.",
    )
    min_iou: float = Field(
        0.2,
        ge=0.0,
        le=1.0,
        description="Least IoU between a track's predicted box and a face for the face to continue the "
        "track on position alone. Lower follows fast faces at low sample rates but joins neighbours; "
        "higher splits tracks of fast-moving faces.",
    )
    min_similarity: float | None = Field(
        None,
        ge=-1.0,
        le=1.0,
        description="Least cosine similarity between a track's features and a new face of it for them to be "
        "one person: below it the face never continues the track (overlaps, re-finding a lost track), and a "
        "track whose newly embedded face falls below it is split (the old track ends with its name, the face "
        "starts a new track decided from its own evidence). Unset = the embedder's calibrated "
        "same_person_threshold (where pairs of different people pass at most 0.1 % of the time). Higher "
        "splits a person's track on poor faces; lower lets one track carry a name onto another person.",
    )
    max_distance: float = Field(
        2.0,
        ge=0.0,
        description="How far, in face sizes from the predicted position, a face whose box no longer "
        "overlaps a track may still continue it when the features agree. Larger re-finds faces after "
        "longer gaps but costs more embeddings of nearby faces.",
    )
    max_lost_s: float = Field(
        2.0,
        gt=0.0,
        description="Seconds a track survives without a detection (a turned head, a missed frame); at "
        "least two sample intervals at low sample rates. Longer keeps ids through misses but delays "
        "`end` events by as much.",
    )
    min_hits: int = Field(
        2,
        ge=1,
        description="Consecutive samples a face must be seen before its track is confirmed and announced "
        "(`new`). Higher hides one-frame false detections but delays every event by a sample each.",
    )
    feature_momentum: float = Field(
        0.8,
        ge=0.0,
        lt=1.0,
        description="Share of a track's previous feature kept when a new face vector is averaged in. "
        "Higher is steadier against one bad face; lower follows a changing head pose sooner.",
    )
    # ---- change of person between embeddings
    detect_changes: bool = Field(
        True,
        description="Embed a face at once, whatever the re-embedding policy says, when it no longer looks like "
        "the face its track had in the previous sample (see change_*): another person may have taken the "
        "place. Costs an embedding per change; off, a track named by one person is only re-checked every "
        "recheck_every samples.",
    )
    change_look_similarity: float = Field(
        0.6,
        ge=-1.0,
        le=1.0,
        description="A face whose grey thumbnail correlates less than this with its track's previous face "
        "counts as changed. Higher re-embeds more often (turning heads, flicker).",
    )
    change_colour_distance: float = Field(
        30.0,
        gt=0.0,
        description="A face whose mean colour (0-255 BGR, centre of the box) moved more than this from its "
        "track's previous face counts as changed. Lower re-embeds more often when the light changes.",
    )
    change_size_ratio: float = Field(
        1.3,
        gt=1.0,
        description="A face whose size (square root of the box area) grew or shrank by more than this factor "
        "since its track's previous face counts as changed.",
    )
    change_shift: float = Field(
        0.5,
        gt=0.0,
        description="A face whose centre lies further than this many face sizes from where its track's motion "
        "puts it counts as changed.",
    )
    # ---- re-embedding policy
    recheck_every: int = Field(
        10,
        ge=1,
        description="A confidently identified track is embedded again once every this many samples it is "
        "seen. Higher saves embedding time; lower notices a wrong name or a track swap sooner.",
    )
    better_face_ratio: float = Field(
        1.3,
        ge=1.0,
        description="A face of an identified track is embedded before its re-check when its weight (size x "
        "quality) is at least this many times the best weight embedded so far. Lower embeds more often.",
    )
    embed_budget: int = Field(
        12,
        ge=1,
        description="Samples in a row an unidentified (unknown or tie) track is embedded; after that it is "
        "re-checked like an identified one (every recheck_every samples, or on a clearly better face). "
        "Enrolled people are named after 3-4 embeddings (min_votes 3), so 12 leaves room for a bad start; "
        "higher names hard faces a little more often but spends embedding time on people who are not "
        "enrolled.",
    )
    clearly_unknown_below: float | None = Field(
        None,
        ge=-1.0,
        le=1.0,
        description="An unnamed track stops spending embed_budget once min_votes of its faces were embedded "
        "and the closest any came to a gallery face is under this similarity: someone not enrolled, not a "
        "hard face of someone who is. It is then re-checked like a named track. Unset = two thirds of the "
        "vote threshold. -1 spends the whole budget.",
    )
    # ---- identity decision
    template: bool = Field(
        True,
        description="When the vote names nobody after min_votes faces, search the track's template (the "
        "quality-weighted mean of its face vectors) as one face and name it by the single-face rule "
        "(index.rec_threshold and index.margin). Names tracks with one poor face among a few good ones sooner; "
        "off: the vote alone decides.",
    )
    min_score: float | None = Field(
        None,
        ge=-1.0,
        le=1.0,
        description="Least similarity for an observation to vote for a name; below it the observation "
        "votes unknown. Unset = the recognition threshold (index.rec_threshold or the embedder's default).",
    )
    min_votes: int = Field(
        3,
        ge=1,
        description="Observations that must agree on a name before the track is named. Higher means fewer "
        "wrong names but a later `identified` event (one sample each).",
    )
    min_margin: float = Field(
        0.3,
        ge=0.0,
        le=1.0,
        description="The winning name's share of the weighted vote must exceed the runner-up's (another "
        "name, or unknown) by this much; else the track stays unknown (or tie). Higher avoids "
        "confusing look-alikes but leaves more tracks unnamed.",
    )
    revise_margin: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description="Hysteresis: a name already given is replaced (by another name or unknown) only when "
        "the challenger's vote share exceeds it by this much, with min_votes observations. Higher "
        "never flaps but corrects a wrong early name later.",
    )
    full_weight_face_px: float = Field(
        100.0,
        gt=0.0,
        description="Face size (square root of the box area, pixels) at which an observation gets full "
        "weight; smaller faces weigh proportionally less in the vote.",
    )

    @model_validator(mode="after")
    def _check(self) -> TrackingSettings:
        if self.iou_weight + self.feature_weight <= 0:
            raise ValueError("iou_weight and feature_weight cannot both be 0")
        if self.revise_margin < self.min_margin:
            raise ValueError(
                f"revise_margin ({self.revise_margin}) must be at least min_margin ({self.min_margin}), "
                "or a name could be replaced on less evidence than it took to give it"
            )
        return self

    def similarity_gate(self, same_person_threshold: float) -> float:
        """``min_similarity``, or the embedder's calibrated same-person threshold."""
        return same_person_threshold if self.min_similarity is None else self.min_similarity

    def clearly_unknown_threshold(self, vote_threshold: float) -> float:
        """``clearly_unknown_below``, or two thirds of the vote threshold."""
        return 2.0 * vote_threshold / 3.0 if self.clearly_unknown_below is None else self.clearly_unknown_below

    def vote_threshold(self, rec_threshold: float) -> float:
        """``min_score``, or the recognition threshold in use."""
        return rec_threshold if self.min_score is None else self.min_score
