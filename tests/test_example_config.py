"""configs/streamd.yaml: generated from the settings models, loads as it is, and shows every option."""

from __future__ import annotations

import importlib.util
import re
from typing import Any, get_args

import pytest
import yaml
from pydantic import BaseModel

from conftest import PROJECT_ROOT
from streamd.settings import Settings, load_settings

EXAMPLE = PROJECT_ROOT / "configs" / "streamd.yaml"


def _tool():
    spec = importlib.util.spec_from_file_location("gen_example_config", PROJECT_ROOT / "tools" / "gen_example_config.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def no_env_overrides(monkeypatch):
    import os

    for name in [n for n in os.environ if n.startswith("STREAMD_")]:
        monkeypatch.delenv(name)


def test_the_example_is_not_stale():
    # given the settings models as they are now
    # when the example is generated again
    text = _tool().render()
    # then it is what the repository holds
    assert EXAMPLE.read_text() == text, "configs/streamd.yaml is stale: run python tools/gen_example_config.py"


def test_the_example_loads_as_it_is():
    # when
    settings = load_settings(EXAMPLE)
    # then the example cameras are there, disabled, and the rest is the defaults
    assert [(c.name, c.enabled) for c in settings.cameras] == [("front_door", False), ("desk", False)]
    assert settings.model_dump(exclude={"cameras"}) == Settings().model_dump(exclude={"cameras"})


def _discriminated_variants(model: type[BaseModel], name: str) -> dict[str, type[BaseModel]]:
    field = model.model_fields[name]
    return {get_args(v.model_fields[field.discriminator].annotation)[0]: v for v in get_args(field.annotation)}


def _check_keys(model: type[BaseModel], data: dict[str, Any], path: str, commented: set[str], seen: set[str]) -> None:
    expected = {n for n in model.model_fields if f"{path}{n}" not in commented}
    assert set(data) == expected, f"{path or 'top level'}: missing {expected - set(data)}, extra {set(data) - expected}"
    for name, field in model.model_fields.items():
        seen.add(f"{model.__name__}.{name}")
        value = data.get(name)
        if field.discriminator and isinstance(value, dict):
            variant = _discriminated_variants(model, name)[value[field.discriminator]]
            _check_keys(variant, value, f"{path}{name}.", commented, seen)
            continue
        annotation = field.annotation
        args = [a for a in get_args(annotation) if isinstance(a, type)] or [annotation]
        for sub in args:
            if isinstance(sub, type) and issubclass(sub, BaseModel):
                if isinstance(value, dict):
                    _check_keys(sub, value, f"{path}{name}.", commented, seen)
                elif isinstance(value, list) and value and isinstance(value[0], dict):
                    _check_keys(sub, value[0], f"{path}{name}.0.", commented, seen)


def _commented_blocks(text: str) -> dict[tuple[str, str], dict[str, Any]]:
    """``# --- detector type: onnx ---`` blocks, their ``# key: value`` lines read back as YAML."""
    blocks: dict[tuple[str, str], dict[str, Any]] = {}
    lines = text.splitlines()
    for i, line in enumerate(lines):
        m = re.match(r"^(\s*)# --- (\w+) type: (\w+) ---$", line)
        if not m:
            continue
        pad, option = m.group(1), re.compile(rf"^{m.group(1)}# (\w+: .*)$")
        body = []
        for following in lines[i + 1 :]:
            if not following.startswith(pad + "#"):
                break
            hit = option.match(following)
            if hit:
                body.append(hit.group(1))
        blocks[(m.group(2), m.group(3))] = yaml.safe_load("\n".join(body))
    return blocks


def test_every_option_appears_and_the_commented_alternatives_load():
    # given the example's text and what it loads to
    text = EXAMPLE.read_text()
    data = yaml.safe_load(text)
    commented = set(_tool().COMMENTED)
    seen: set[str] = set()
    # when the active options are walked against the models
    _check_keys(Settings, data, "", commented, seen)
    # then every commented-out option is shown
    for path in commented:
        assert re.search(rf"^\s*# {path.rsplit('.', 1)[-1]}: ", text, re.M), path
    # and every other detector and embedder type is listed with all its options, valid as written
    blocks = _commented_blocks(text)
    from streamd.settings import EngineSettings

    for section in ("detector", "embedder"):
        variants = _discriminated_variants(EngineSettings, section)
        active = data["engine"][section]["type"]
        assert {t for s, t in blocks if s == section} == set(variants) - {active}
        for tag, variant in variants.items():
            if tag == active:
                continue
            block = blocks[(section, tag)]
            assert set(block) == set(variant.model_fields), f"{section} {tag}"
            variant.model_validate(block)


def test_the_example_camera_shows_every_camera_option():
    # given
    data = yaml.safe_load(EXAMPLE.read_text())
    from streamd.sources.config import BackoffSettings, CameraSettings, UsbSettings

    # when / then
    first = data["cameras"][0]
    assert set(first) == set(CameraSettings.model_fields)
    assert set(first["backoff"]) == set(BackoffSettings.model_fields)
    assert set(first["usb"]) == set(UsbSettings.model_fields)
    assert first["zones"][0].keys() == {"name", "polygon"}
