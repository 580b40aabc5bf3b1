"""`streamd bench scenes`: does a track ever carry a name to another person, and how soon are people named.

The clips are scene families of :mod:`streamd.bench.scenes` (``walks``, ``handoff``, ``crossing``,
``return``) cast from one half of ``--faces-dir``'s identities (:mod:`streamd.eval.split`; the
*report* half by default, people the defaults were never tuned on). Clips, gallery and index are
made once and cached in ``--work-dir``.

Every clip goes through the daemon's own per-frame code: decoded and sampled as ``streamd run``
samples a file (PyAV, :class:`~streamd.sources.sampler.Sampler`), then each sample through a
:class:`~streamd.pipeline.worker.RecognitionWorker`'s ``process`` (region planning, detection,
quality gate, tracker, embedding of the faces the tracker asks for, the index search, the
identity vote) with a :class:`~streamd.pipeline.runner.LocalRunner`. Nothing is paced in real time
and no sample is dropped, so a run is deterministic for a given engine and as fast as the engine.

After every sample the camera's shown tracks (box and label) are recorded and scored against the
truth (:func:`streamd.bench.scoring.score_samples`).

``--difficulty hard`` (the default: what is reported is the hard case) renders the families'
hard variant (:data:`streamd.bench.scenes.HARD`) and casts look-alike strangers chosen with the
benchmarked engine (:func:`streamd.bench.scenes.pick_lookalike_people`), so its clips differ per
engine; ``normal`` renders them as first made.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import click
import yaml

from streamd.bench.pipeline import DEFAULT_RECOGNISER, RECOGNISERS, data_dirs, engine_settings
from streamd.bench.scenes import DIFFICULTIES, FAMILIES, NORMAL, Difficulty, Role, SceneClip, Stranger
from streamd.bench.scoring import SampleRecord, SceneScore, ShownTrack, merge_scores, score_samples
from streamd.eval.split import HALVES
from streamd.types import Frame

DEFAULT_WORK_DIR = Path.home() / ".cache" / "streamd" / "bench-scenes"
#: People in the run's cast (every family draws from them); a quarter are never enrolled.
DEFAULT_POOL = 40
#: Bumped when the families' plans or a difficulty's settings change: cached clips of older plans are not reused.
PLAN_VERSION = 1
#: Wall-clock origin of the frames' capture times: the samples are not paced, so capture time is
#: this plus the video time (events then say when in the video they happened).
EPOCH = 1_000_000_000.0


# --------------------------------------------------------------------------- preparation


def head_cutter(models_dir: Path | None, engine: Any) -> tuple[str, Callable[..., Any]]:
    """The detector that cuts heads from the photos: YuNet when ``models_dir`` has it (the same
    clips for every engine), else the benchmarked engine's own detector; its name and ``detect``."""
    from streamd.faces.factory import create_detector
    from streamd.faces.modelfile import DEV_MODEL_FILES
    from streamd.settings import EngineSettings

    yunet = models_dir / DEV_MODEL_FILES["yunet"] if models_dir is not None else None
    if yunet is not None and yunet.is_file():
        settings = EngineSettings(detector={"type": "onnx", "model": "yunet", "model_path": str(yunet)})
        return "yunet", create_detector(settings.detector).detect
    return engine.fingerprint.split(":")[0] or "engine", engine.detector.detect


def photo_embedder(engine: Any) -> Callable[[Path], Any]:
    """The feature of a photo's largest face with ``engine`` (None: no face, or it failed the quality gate)."""
    from streamd.images import read_image

    def embed(photo: Path) -> Any:
        results = engine.analyze(read_image(photo), largest_only=True)
        return results[0].vector if results and results[0].vector is not None else None

    return embed


def lookalike_cast(
    engine: Any, identities: Path, *, half: str, seed: int, pool: int, share: float, cache: Path,
    echo: Callable[[str], None],
) -> tuple[list[Role], list[Stranger]]:
    """The hard variant's cast (:func:`~streamd.bench.scenes.pick_lookalike_people` with ``engine``),
    cached in the JSON file ``cache``: ranking the half's people embeds a few hundred photos."""
    from streamd.bench.scenes import pick_lookalike_people

    if cache.exists():
        data = json.loads(cache.read_text())
        roles = [Role(r["label"], r["enrolled"], Path(r["video_image"]), tuple(Path(x) for x in r["gallery"]),
                      tuple(Path(x) for x in r["probes"])) for r in data["roles"]]
        return roles, [Stranger(**x) for x in data["strangers"]]
    echo(f"choosing look-alike strangers with {engine.fingerprint} (embedding the {half} half's photos) ...")
    roles, strangers = pick_lookalike_people(identities, pool, photo_embedder(engine),
                                             half=half,  # type: ignore[arg-type]
                                             seed=seed, lookalike_share=share)
    partial = cache.with_name("partial-" + cache.name)
    partial.write_text(json.dumps({"roles": [asdict(r) for r in roles], "strangers": [asdict(x) for x in strangers]},
                                  default=str))
    partial.replace(cache)
    return roles, strangers


def prepare(
    engine: Any, families: Sequence[str], *, faces_dir: Path, models_dir: Path | None, work_dir: Path, half: str,
    seed: int, pool: int, people: int | None, sample_fps: float, gop: int, echo: Callable[[str], None],
    difficulty: Difficulty = NORMAL,
) -> tuple[Path, dict[str, Path], list[Stranger]]:
    """The index of the cast's gallery (built with ``engine``), each family's truth file (cached) and,
    for a difficulty with look-alikes, who the never-enrolled people are and how close they come."""
    from streamd.bench.scenes import family_plan, load_truth, pick_people, render_walks, save_truth, wall_image
    from streamd.bench.scenes import write_gallery
    from streamd.index.builder import build_index

    work_dir.mkdir(parents=True, exist_ok=True)
    # The engine's whole fingerprint names what depends on it: two recognisers of one kind differ.
    digest = hashlib.sha256(engine.fingerprint.encode()).hexdigest()[:10]
    strangers: list[Stranger] = []
    if difficulty.lookalike_share:
        # Look-alikes are chosen with the benchmarked engine: the cast, its gallery and clips are the engine's.
        cast = f"{half}-s{seed}-pool{pool}-{difficulty.name}-{digest}"
        roles, strangers = lookalike_cast(engine, faces_dir / "identities", half=half, seed=seed, pool=pool,
                                          share=difficulty.lookalike_share, cache=work_dir / f"cast-{cast}.json",
                                          echo=echo)
    else:
        roles = pick_people(faces_dir / "identities", pool, half=half, seed=seed)  # type: ignore[arg-type]
        cast = f"{half}-s{seed}-pool{pool}" + ("" if difficulty.name == "normal" else f"-{difficulty.name}")
    gallery = work_dir / f"gallery-{cast}"
    if not gallery.exists():
        partial = work_dir / f"partial-gallery-{cast}"
        write_gallery(roles, partial)
        partial.replace(gallery)
    index_dir = work_dir / f"index-{cast}-{engine.fingerprint.split(':')[0]}-{engine.dim}-{digest}"
    if not (index_dir / "vector.index").exists():
        echo(f"building the index in {index_dir} ...")
        build_index(engine, gallery, index_dir)
    cutter, detect = head_cutter(models_dir, engine)
    truths = {}
    for family in families:
        scale = "d" if people is None else str(people)
        name = f"{family}-v{PLAN_VERSION}-{cast}-n{scale}-f{sample_fps:g}-gop{gop}-{cutter}"
        truth = work_dir / f"{name}.json"
        if not truth.exists() or not load_truth(truth).path.exists():
            plan_seed = seed * 1000 + len(family)
            walks = family_plan(family, roles, people=people, sample_fps=sample_fps, seed=plan_seed,
                                difficulty=difficulty)
            frames = int(round((max(w.end_s for w in walks) + 0.5) * 25))
            with click.progressbar(length=frames, label=f"rendering {name}.mp4") as bar:
                clip = render_walks(walks, work_dir / f"{name}.mp4", detect, wall=wall_image(faces_dir), roles=roles,
                                    gop=gop, difficulty=difficulty, seed=plan_seed, progress=bar.update)
            save_truth(clip, truth)
        truths[family] = truth
    return index_dir, truths, strangers


# --------------------------------------------------------------------------- recognition


def sampled_frames(path: Path, camera: str, sample_fps: float) -> Iterator[Frame]:
    """The frames ``streamd run`` would sample from the file at ``path``, as fast as they decode.

    The camera supervisor's loop without its pacing and queue: damaged frames are skipped (and
    counted in the next frame's ``skipped``), the sampler picks by timestamp, and frames before the
    sampler's next pick may go undecoded (``wanted_from``).
    """
    from streamd.sources.config import CameraSettings
    from streamd.sources.pyav_source import PyAVReader
    from streamd.sources.sampler import Sampler

    settings = CameraSettings(name=camera, url=str(path), sample_fps=sample_fps, realtime=False)
    reader = PyAVReader(settings).open()
    sampler = Sampler(sample_fps)
    seq = 0
    try:
        for decoded in reader.frames():
            if decoded.corrupt:
                sampler.skip(1 + decoded.unseen)
                continue
            if sampler.offer(decoded.pts, decoded.unseen):
                yield Frame(camera, seq, decoded.pts, EPOCH + decoded.pts, decoded.to_bgr(), sampler.skipped)
                seq += 1
            reader.wanted_from = sampler.wanted_from
    finally:
        reader.close()


def recognise_clip(
    clip: SceneClip, settings: Any, engine: Any, holder: Any, *, camera: str, sample_fps: float,
    progress: Callable[[int], None] | None = None,
) -> list[SampleRecord]:
    """Every sample of ``clip`` through the daemon's per-frame recognition; what it showed after each."""
    from streamd.faces.quality import QualityGate
    from streamd.faces.regions import supports_regions
    from streamd.metrics import Metrics
    from streamd.pipeline.camera import CameraRecognition, FrameResult
    from streamd.pipeline.regions import RegionPlanner
    from streamd.pipeline.runner import LocalRunner
    from streamd.pipeline.scheduler import Claim, FrameScheduler
    from streamd.pipeline.worker import RecognitionWorker
    from streamd.recognize import resolve_threshold
    from streamd.sources.queues import END
    from streamd.tracking.manager import TrackManager

    metrics = Metrics()
    # As RecognitionPipeline.add_camera builds a camera's tracker: the same-person gate, and the
    # index search for track templates. Trees from before them (the baseline this benchmark
    # compares with) have no such arguments.
    extra: dict[str, Any] = {}
    if hasattr(engine, "same_person_threshold"):
        import functools

        from streamd.pipeline.recognition import search_one

        extra = {"same_person_threshold": engine.same_person_threshold, "margin": settings.index.margin,
                 "search": functools.partial(search_one, holder, settings.index.rec_topk)}
    manager = TrackManager(camera, settings.tracking, rec_threshold=resolve_threshold(settings.index.rec_threshold,
                                                                                       engine), metrics=metrics, **extra)
    # As App.from_settings: regions only where the detector can detect crops.
    planner = RegionPlanner(settings.pipeline.region_detection) if supports_regions(engine.detector) else None
    recognition = CameraRecognition(camera, manager, QualityGate(settings.engine.quality), metrics, planner)
    records: list[SampleRecord] = []
    labels: dict[int, str | None] = {}

    def on_result(result: FrameResult) -> None:
        for event in result.events:
            labels[event.track_id] = event.label
        shown = tuple(ShownTrack(s.track_id, s.box, labels.get(s.track_id, s.label))
                      for s in manager.states() if s.last_ts == result.pts)  # seen in this sample
        records.append(SampleRecord(result.pts, shown, len(result.faces), len(result.embedded)))

    # One runner for the clip (the engine the caller loaded), as a worker thread has one.
    runner = LocalRunner(engine)
    worker = RecognitionWorker(f"bench-scenes-{camera}", FrameScheduler(), {camera: recognition}, lambda: runner,
                               holder, topk=settings.index.rec_topk, batch_frames=1, emit=lambda events: None,
                               on_result=on_result)
    for frame in sampled_frames(clip.path, camera, sample_fps):
        worker.process([Claim(camera, frame)])
        if progress is not None:
            progress(frame.skipped + 1)
    worker.process([Claim(camera, END)])
    worker.join()
    failed = metrics.registry.get_sample_value("streamd_frames_dropped_total", {"camera": camera, "reason": "error"})
    if failed:
        raise click.ClickException(f"{clip.path.name}: recognition failed on {failed:.0f} sample(s) (see the log)")
    return records


# --------------------------------------------------------------------------- the table


def table(score: SceneScore) -> list[str]:
    """The figures of one family, a row each (the order the docs explain them in)."""
    tti = score.median_time_to_identify
    rows = [
        ("enrolled appearances named", f"{score.named}/{score.enrolled_appearances}"),
        ("never named", f"{score.never_named}"),
        ("tracks shown under someone else's name", f"{score.tracks_misnamed}/{score.tracks}"),
        ("strangers named", f"{score.strangers_named}/{score.stranger_appearances}"),
        ("carried tracks", f"{score.carried_tracks}/{score.tracks}"),
        ("tracks named on no true face", f"{score.named_off_face}/{score.tracks}"),
        ("time to identify", "none" if tti is None else
         f"median {tti:.2f} s, p90 {score.p90_time_to_identify:.2f} s (n={len(score.times_to_identify)})"),
        ("embeddings per sample", f"{score.embeddings_per_sample:.2f} ({score.embedded} of {score.detected} faces "
                                  f"detected, {score.samples} samples)"),
    ]
    width = max(len(name) for name, _ in rows)
    return [f"  {name:<{width}}  {value}" for name, value in rows]


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """``KEY=VALUE`` items (dotted keys, YAML values) as one nested settings dict."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="--set")
        *parents, leaf = key.strip().split(".")
        node = out
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(value)
    return out


def _commit() -> str | None:
    """The checkout's commit, when run from one (the figures say what code they measured)."""
    try:
        done = subprocess.run(["git", "log", "-1", "--format=%h"], capture_output=True, text=True, timeout=10,
                              cwd=Path(__file__).resolve().parent)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None


# --------------------------------------------------------------------------- command


@click.command("scenes")
@click.option("--family", type=click.Choice([*FAMILIES, "all"]), default="all", show_default=True,
              help="Which scene family to run: back-to-back walks, hand-offs at an edge, two people crossing, "
                   "people leaving and coming back; all: each in turn.")
@click.option("--engine", type=click.Choice(["onnx", "dlib"]), default="onnx", show_default=True,
              help="onnx: YuNet + MobileFaceNet from --models-dir; dlib: HOG + ResNet (face_recognition_models).")
@click.option("--recogniser", type=click.Choice(sorted(RECOGNISERS)), default=DEFAULT_RECOGNISER, show_default=True,
              help="The onnx engine's MobileFaceNet (see `streamd bench pipeline --help`).")
@click.option("--models-dir", type=click.Path(path_type=Path, file_okay=False),
              help="Folder laid out like ../shared/models (default: ../shared/models). Its YuNet also cuts the "
                   "heads from the photos, so every engine sees the same clips.")
@click.option("--faces-dir", type=click.Path(path_type=Path, file_okay=False),
              help="Face data laid out like ../shared/data/faces (default: ../shared/data/faces).")
@click.option("--work-dir", type=click.Path(path_type=Path, file_okay=False), default=DEFAULT_WORK_DIR,
              show_default=True, help="Where clips, gallery and index are made and cached.")
@click.option("--half", type=click.Choice(HALVES), default="report", show_default=True,
              help="Which half of the identities the cast comes from (streamd.eval.split): report = people the "
                   "defaults were never tuned on.")
@click.option("--seed", type=int, default=1, show_default=True, help="Chooses the cast and the scenes.")
@click.option("--pool", type=click.IntRange(2, 400), default=DEFAULT_POOL, show_default=True,
              help="People in the cast (a quarter never enrolled); every family draws its walkers from them.")
@click.option("--people", type=click.IntRange(1, 400),
              help="Walkers per family instead of each family's default (walks: 3 s of clip per walker; "
                   "small values make short clips for tests).")
@click.option("--sample-fps", type=click.FloatRange(0.1, 25), default=5.0, show_default=True,
              help="Samples per second, as a camera's sample_fps.")
@click.option("--gop", type=click.IntRange(1, 250), default=25, show_default=True, help="Keyframe interval in frames.")
@click.option("--difficulty", type=click.Choice(sorted(DIFFICULTIES)), default="hard", show_default=True,
              help="hard: some faces near the quality gate's minimum, dim uneven light, motion blur on fast walkers, "
                   "turned heads, stronger compression, hand-offs before and after the last walker left, and "
                   "look-alike strangers chosen with the benchmarked engine; normal: the families as first made.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Run with a daemon setting changed (dotted key, YAML value), e.g. --set tracking.embed_budget=12 "
                   "or --set engine.quality.min_blur_var=3; repeatable. Choose defaults this way on --half tune, "
                   "never on the half they are reported on.")
@click.option("--json", "json_out", type=click.Path(path_type=Path, dir_okay=False),
              help="Also write every figure to this JSON file.")
def command(
    family: str, engine: str, recogniser: str, models_dir: Path | None, faces_dir: Path | None, work_dir: Path,
    half: str, seed: int, pool: int, people: int | None, sample_fps: float, gop: int, difficulty: str,
    overrides: tuple[str, ...], json_out: Path | None,
) -> None:
    """Name carrying and time to identify on scenes made to provoke it (no pacing, deterministic)."""
    from streamd.bench.scenes import load_truth
    from streamd.faces.engine import FaceEngine
    from streamd.index.holder import IndexHolder
    from streamd.index.library import FeatureLibrary
    from pydantic import ValidationError

    from streamd.pipeline.recognition import single_threaded_search
    from streamd.settings import Settings, deep_merge

    echo = click.echo
    models_dir, faces_dir = data_dirs(models_dir, faces_dir)
    families = FAMILIES if family == "all" else (family,)
    eng = engine_settings(engine, models_dir if engine == "onnx" else None, recogniser, work_dir)
    base = {"engine": eng, "index": {"dir": str(work_dir), "watch": False}, "mqtt": {"enabled": False},
            "http": {"enabled": False}, "cameras": []}
    try:
        settings = Settings(**deep_merge(base, parse_overrides(overrides)))
    except ValidationError as err:
        raise click.UsageError(f"--set: {err}") from None
    face_engine = FaceEngine.from_settings(settings.engine)
    started = time.monotonic()
    level = DIFFICULTIES[difficulty]
    index_dir, truths, strangers = prepare(face_engine, families, faces_dir=faces_dir, models_dir=models_dir,
                                           work_dir=work_dir, half=half, seed=seed, pool=pool, people=people,
                                           sample_fps=sample_fps, gop=gop, echo=echo, difficulty=level)
    holder = IndexHolder()
    holder.swap(FeatureLibrary.load(index_dir, expected_dim=face_engine.dim,
                                    expected_fingerprint=face_engine.fingerprint), "bench")
    single_threaded_search()  # as the daemon's workers search
    commit = _commit()
    described = f"{engine} ({recogniser})" if engine == "onnx" else engine
    echo(f"engine {described}; difficulty {level.name}; cast: {pool} people of the {half} half of "
         f"{faces_dir / 'identities'} (seed {seed}); {sample_fps:g} samples/s, GOP {gop}, crf {level.crf}, "
         f"region detection as the daemon's default; commit {commit or '?'}")
    if overrides:
        echo("settings changed for this run: " + ", ".join(overrides))
    if strangers:
        close = [x for x in strangers if x.lookalike]
        echo(f"never-enrolled people: {len(close)} of {len(strangers)} look-alikes (best similarity to an enrolled "
             f"person's gallery photo: " + ", ".join(f"{x.similarity:.2f}" for x in close) + "), the others at random")
    out: dict[str, Any] = {"engine": engine, "recogniser": recogniser if engine == "onnx" else None, "half": half,
                           "seed": seed, "pool": pool, "people": people, "sample_fps": sample_fps, "gop": gop,
                           "difficulty": level.name, "difficulty_settings": asdict(level),
                           "strangers": [asdict(x) for x in strangers], "commit": commit,
                           "overrides": list(overrides), "families": {}}
    scores = []
    for name in families:
        clip = load_truth(truths[name])
        with click.progressbar(length=clip.frames, label=f"recognising {clip.path.name}") as bar:
            records = recognise_clip(clip, settings, face_engine, holder, camera=name, sample_fps=sample_fps,
                                     progress=bar.update)
        score = score_samples(records, clip, family=name)
        scores.append(score)
        enrolled = score.enrolled_appearances
        echo(f"{name}: {clip.duration_s:.1f} s clip, {len(clip.appearances)} appearances ({enrolled} enrolled, "
             f"{score.stranger_appearances} never enrolled)")
        for line in table(score):
            echo(line)
        for title, items in (("shown under someone else's name", score.misnamed), ("carried", score.carried),
                             ("never named", score.missed)):
            if items:
                echo(f"  {title}: " + "; ".join(items))
        out["families"][name] = {**asdict(score), "embeddings_per_sample": score.embeddings_per_sample,
                                 "median_time_to_identify": score.median_time_to_identify,
                                 "p90_time_to_identify": score.p90_time_to_identify, "clip": str(clip.path)}
    if len(scores) > 1:
        total = merge_scores(scores, "all")
        echo("all families:")
        for line in table(total):
            echo(line)
        out["all"] = {**asdict(total), "embeddings_per_sample": total.embeddings_per_sample,
                      "median_time_to_identify": total.median_time_to_identify,
                      "p90_time_to_identify": total.p90_time_to_identify}
    echo(f"({time.monotonic() - started:.0f} s)")
    if json_out is not None:
        json_out.write_text(json.dumps(out, indent=1, default=str))
