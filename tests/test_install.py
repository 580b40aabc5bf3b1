"""tools/install.sh staged into a temporary root (--destdir): layout, idempotence, conffile upgrades, dry run."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from conftest import PROJECT_ROOT

SCRIPT = PROJECT_ROOT / "tools" / "install.sh"


@pytest.fixture
def source(tmp_path: Path) -> Path:
    """A copy of the files install.sh reads, so a test can play a newer release."""
    if not shutil.which("systemd-sysusers"):
        message = "systemd-sysusers is not installed (apt-get install -y systemd)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    src = tmp_path / "src"
    for rel in ("tools/install.sh", "configs/streamd.yaml", "docs/operations.md", "systemd"):
        target = src / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if (PROJECT_ROOT / rel).is_dir():
            shutil.copytree(PROJECT_ROOT / rel, target)
        else:
            shutil.copy2(PROJECT_ROOT / rel, target)
    return src


def install(src: Path, root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        ["bash", str(src / "tools" / "install.sh"), "--destdir", str(root), "--skip-venv", *args],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def mode(path: Path) -> str:
    return oct(stat.S_IMODE(path.stat().st_mode))


def test_a_fresh_install_lays_out_unit_user_config_and_credentials(source, tmp_path):
    # given an empty root
    root = tmp_path / "root"
    # when
    install(source, root, "--prefix", "/srv/streamd")
    # then the unit runs the venv of the prefix
    unit = (root / "etc/systemd/system/streamd.service").read_text()
    assert "ExecStart=/srv/streamd/venv/bin/streamd run --config /etc/streamd/streamd.yaml" in unit
    assert "/opt/streamd" not in unit
    # the user exists, in the video group
    assert any(line.startswith("streamd:") for line in (root / "etc/passwd").read_text().splitlines())
    video = [line for line in (root / "etc/group").read_text().splitlines() if line.startswith("video:")]
    assert video and "streamd" in video[0].split(":")[3].split(",")
    # the config is the example, not world-readable (camera URLs may hold passwords)
    config = root / "etc/streamd/streamd.yaml"
    assert config.read_text() == (source / "configs/streamd.yaml").read_text()
    assert mode(config) == "0o640"
    # credentials: a root-only directory with the two files LoadCredential= needs
    creds = root / "etc/streamd/credentials"
    assert mode(creds) == "0o700"
    assert {p.name: (p.read_text(), mode(p)) for p in creds.iterdir()} == {
        "mqtt_password": ("", "0o600"),
        "http_token": ("", "0o600"),
    }
    # state directories and shared files
    for d in ("var/lib/streamd/index", "var/lib/streamd/spool", "var/lib/streamd/snapshots", "var/cache/streamd"):
        assert (root / d).is_dir(), d
    assert (root / "srv/streamd/share/docs/operations.md").exists()
    assert (root / "srv/streamd/share/systemd/streamd.service.d/paddle.conf").exists()
    assert (root / "etc/sysusers.d/streamd.conf").exists() and (root / "etc/tmpfiles.d/streamd.conf").exists()


def test_running_it_again_changes_nothing(source, tmp_path):
    # given an installed root
    root = tmp_path / "root"
    install(source, root)
    before = {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}
    # when
    again = install(source, root)
    # then
    assert "installing" not in again.stdout and ".new" not in again.stdout
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()} == before


def test_an_edited_config_is_kept_and_the_new_default_goes_beside_it(source, tmp_path):
    # given an installed root whose config the operator edited, and a release with a new default
    root = tmp_path / "root"
    install(source, root)
    config = root / "etc/streamd/streamd.yaml"
    config.write_text(config.read_text().replace("host: localhost", "host: broker.lan"))
    edited = config.read_text()
    (source / "configs/streamd.yaml").write_text((source / "configs/streamd.yaml").read_text() + "# new release\n")
    # when the new release is installed
    result = install(source, root)
    # then the edit survives, the new default is in streamd.yaml.new
    assert config.read_text() == edited
    assert (root / "etc/streamd/streamd.yaml.new").read_text().endswith("# new release\n")
    assert "was edited: kept" in result.stdout


def test_an_unedited_config_follows_the_new_default(source, tmp_path):
    # given an installed root whose config was never edited, and a release with a new default
    root = tmp_path / "root"
    install(source, root)
    (source / "configs/streamd.yaml").write_text((source / "configs/streamd.yaml").read_text() + "# new release\n")
    # when
    install(source, root)
    # then
    assert (root / "etc/streamd/streamd.yaml").read_text().endswith("# new release\n")
    assert not (root / "etc/streamd/streamd.yaml.new").exists()


def test_existing_credentials_are_never_touched(source, tmp_path):
    # given an installed root with a password written into its credential file
    root = tmp_path / "root"
    install(source, root)
    secret = root / "etc/streamd/credentials/mqtt_password"
    secret.write_text("hunter22\n")
    # when
    install(source, root)
    # then
    assert secret.read_text() == "hunter22\n"


def test_dry_run_prints_the_plan_and_changes_nothing(source, tmp_path):
    # given
    root = tmp_path / "root"
    # when a dry run includes the venv step
    result = subprocess.run(
        ["bash", str(source / "tools/install.sh"), "--dry-run", "--destdir", str(root), "--extras", "onnx"],
        capture_output=True,
        text=True,
    )
    # then it lists the commands, and the root holds nothing but its (empty) directory
    assert result.returncode == 0, result.stderr
    assert f"-m venv {root}/opt/streamd/venv" in result.stdout
    assert f"pip install --quiet --upgrade {source}\\[onnx\\]" in result.stdout
    assert "systemd-sysusers" in result.stdout
    assert list(root.rglob("*")) == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--prefix", "relative/dir"], "--prefix must be an absolute path, got relative/dir"),
        (["--frobnicate"], "unknown option --frobnicate"),
    ],
)
def test_bad_options(source, tmp_path, args, message):
    # when
    result = subprocess.run(
        ["bash", str(source / "tools/install.sh"), "--destdir", str(tmp_path / "r"), *args], capture_output=True, text=True
    )
    # then
    assert result.returncode == 2
    assert message in result.stderr
