"""What streamd knows about PaddleX's face models and Paddle model folders (no heavy imports).

PaddleX 3.x names its face models in two modules of its registry
(``paddlex/inference/utils/official_models.py``): ``face_detection`` and ``face_feature``. Every one
of them is a Paddle static-graph export; a PaddleX 3 export is a folder with ``inference.json``
(the PIR program) or, for older exports, ``inference.pdmodel`` (the legacy ProgramDesc), plus
``inference.pdiparams`` (weights) and ``inference.yml`` (``Global.model_name`` and the
pre/post-processing PaddleX reads). Exports made before PaddleX 3 (PaddleDetection,
insight-face-paddle) ship ``infer_cfg.yml`` or no yml at all.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

#: PaddleX's face_detection module. None of these exports gives landmarks: faces are cut from
#: the box (see streamd.faces.align.crop_face).
FACE_DETECTION_MODELS: tuple[str, ...] = (
    "BlazeFace",
    "BlazeFace-FPN-SSH",
    "PicoDet_LCNet_x2_5_face",
    "PP-YOLOE_plus-S_face",
)


@dataclass(frozen=True)
class FeatureModel:
    """A PaddleX face_feature model: its feature dimension and input size."""

    name: str
    dim: int
    input_size: int = 112


#: PaddleX's face_feature module.
FACE_FEATURE_MODELS: dict[str, FeatureModel] = {
    "MobileFaceNet": FeatureModel("MobileFaceNet", 128),
    "ResNet50_face": FeatureModel("ResNet50_face", 512),
}

#: The host PaddleX downloads face models from (its "bos" hoster; the HuggingFace, ModelScope
#: and AIStudio hosters carry only the OCR models in PaddleX 3.x).
FACE_MODEL_HOST = "paddle-model-ecology.bj.bcebos.com"

Module = Literal["face_detection", "face_feature"]


def known_models(module: Module) -> tuple[str, ...]:
    """The model names PaddleX's ``module`` knows, in the order the docs list them."""
    return FACE_DETECTION_MODELS if module == "face_detection" else tuple(FACE_FEATURE_MODELS)


def check_model_name(module: Module, model_name: str) -> str:
    """``model_name`` if PaddleX's ``module`` knows it, else ValueError listing the known ones."""
    known = known_models(module)
    if model_name not in known:
        raise ValueError(f"unknown PaddleX {module} model {model_name!r}; known models: {', '.join(known)}")
    return model_name


@dataclass(frozen=True)
class ModelFiles:
    """The files of a Paddle static-graph export in one folder."""

    program: Path
    params: Path
    #: True for a legacy ProgramDesc (``inference.pdmodel``), which Paddle 3.x runs only with
    #: the old IR (``Config.enable_new_ir(False)``); False for a PIR program (``inference.json``).
    legacy: bool
    #: ``inference.yml`` (PaddleX) or ``infer_cfg.yml`` (PaddleDetection), if present.
    config: Path | None


def find_model_files(model_dir: Path, *, need_yml: bool, what: str) -> ModelFiles:
    """The program, weights and config of the export in ``model_dir``.

    Raises FileNotFoundError with one line naming ``what`` (the settings key), the folder and the
    missing file names. ``need_yml`` asks for PaddleX's ``inference.yml`` (the ``paddlex`` engine
    reads its pre/post-processing from it).
    """
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise FileNotFoundError(f"{what}: model folder {model_dir} does not exist")
    json_program, pd_program = model_dir / "inference.json", model_dir / "inference.pdmodel"
    params = model_dir / "inference.pdiparams"
    yml = model_dir / "inference.yml"
    missing = []
    if not json_program.is_file() and not pd_program.is_file():
        missing.append("inference.json (or inference.pdmodel)")
    if not params.is_file():
        missing.append("inference.pdiparams")
    if need_yml and not yml.is_file():
        missing.append("inference.yml")
    if missing:
        raise FileNotFoundError(f"{what}: {model_dir} is missing {', '.join(missing)}")
    program = json_program if json_program.is_file() else pd_program
    config = yml if yml.is_file() else (model_dir / "infer_cfg.yml" if (model_dir / "infer_cfg.yml").is_file() else None)
    return ModelFiles(program=program, params=params, legacy=program.suffix == ".pdmodel", config=config)


def paddlex_cache_dir() -> Path:
    """Where PaddleX keeps downloaded official models (``$PADDLE_PDX_CACHE_HOME`` or ~/.paddlex)."""
    home = os.environ.get("PADDLE_PDX_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".paddlex")
    return Path(home) / "official_models"


#: insight-face-paddle's recogniser preprocessing ((x/255 - 0.5) / 0.5 on RGB 112x112) in
#: PaddleX's inference.yml layout; PaddleX's own MobileFaceNet/ResNet50_face exports ship theirs.
FEATURE_YML = """\
Global:
  model_name: {model_name}
PreProcess:
  transform_ops:
  - ResizeImage:
      size: [112, 112]
  - NormalizeImage:
      scale: 0.00392156862745098
      mean: [0.5, 0.5, 0.5]
      std: [0.5, 0.5, 0.5]
      order: hwc
  - ToCHWImage:
PostProcess:
  NormalizeFeatures:
"""


def to_paddlex_layout(src: Path, dst: Path, model_name: str) -> Path:
    """Copy a legacy Paddle export into ``dst`` with the ``inference.yml`` PaddleX 3 needs.

    A detector's yml is its PaddleDetection ``infer_cfg.yml`` under PaddleX's ``Global.model_name``;
    a recogniser (no yml) gets :data:`FEATURE_YML`. ``src`` is left untouched. Returns ``dst``.
    """
    import shutil

    module: Module = "face_detection" if model_name in FACE_DETECTION_MODELS else "face_feature"
    check_model_name(module, model_name)
    files = find_model_files(Path(src), need_yml=False, what=str(src))
    dst = Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    shutil.copy2(files.program, dst / files.program.name)
    shutil.copy2(files.params, dst / files.params.name)
    if module == "face_detection":
        if files.config is None:
            raise FileNotFoundError(f"{src}: a detector export needs its infer_cfg.yml")
        text = f"Global:\n  model_name: {model_name}\n" + files.config.read_text(encoding="utf-8")
    else:
        text = FEATURE_YML.format(model_name=model_name)
    (dst / "inference.yml").write_text(text, encoding="utf-8")
    return dst
