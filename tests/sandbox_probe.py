"""Run one engine workload under the kernel restrictions streamd's unit asks systemd for.

Used by tests/test_hardening.py as ``python tests/sandbox_probe.py WORKLOAD [--mdwe] [--seccomp]``:

- ``--mdwe``: ``prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN)``, the kernel's own form of
  ``MemoryDenyWriteExecute=yes`` (systemd 255+ uses it; 252 builds a seccomp filter with the same
  effect): no mapping may be writable and executable, or become executable.
- ``--seccomp``: an allow-list filter of ``SystemCallFilter=@system-service`` minus
  ``~@privileged``, every other system call failing with EPERM (``SystemCallErrorNumber=EPERM``),
  built with libseccomp from the groups ``systemd-analyze syscall-filter`` prints.

Both are applied after ``PR_SET_NO_NEW_PRIVS`` (``NoNewPrivileges=yes``), before any engine is
imported. Prints one JSON line: the workload, the faces found and the first vector's checksum, so
the test can compare a sandboxed run with a free one.
"""

from __future__ import annotations

import ctypes
import json
import mmap
import os
import subprocess
import sys
from pathlib import Path

PR_SET_NO_NEW_PRIVS = 38
PR_SET_MDWE = 65
PR_MDWE_REFUSE_EXEC_GAIN = 1
SCMP_ACT_ALLOW = 0x7FFF0000
EPERM = 1


def syscall_groups() -> dict[str, list[str]]:
    """Every ``@group`` of ``systemd-analyze syscall-filter`` with its members (names and @groups)."""
    out = subprocess.run(["systemd-analyze", "syscall-filter"], capture_output=True, text=True, check=True).stdout
    groups: dict[str, list[str]] = {}
    current = None
    for line in out.splitlines():
        if line.startswith("@"):
            current = line.strip()
            groups[current] = []
        elif current and line.strip() and not line.strip().startswith("#"):
            groups[current].append(line.strip())
    return groups


def expand(name: str, groups: dict[str, list[str]]) -> set[str]:
    if not name.startswith("@"):
        return {name}
    out: set[str] = set()
    for member in groups.get(name, []):
        out |= expand(member, groups)
    return out


def apply_seccomp(allow: list[str], deny: list[str]) -> int:
    groups = syscall_groups()
    allowed: set[str] = set()
    for item in allow:
        allowed |= expand(item, groups)
    for item in deny:
        allowed -= expand(item, groups)
    lib = ctypes.CDLL("libseccomp.so.2", use_errno=True)
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint]
    lib.seccomp_load.argtypes = [ctypes.c_void_p]
    ctx = lib.seccomp_init(0x00050000 | EPERM)  # SCMP_ACT_ERRNO(EPERM)
    count = 0
    for name in sorted(allowed):
        nr = lib.seccomp_syscall_resolve_name(name.encode())
        if nr < 0:
            continue  # not a syscall on this architecture
        if lib.seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 0) == 0:
            count += 1
    if lib.seccomp_load(ctx) != 0:
        raise SystemExit("seccomp_load failed")
    return count


def workload(name: str, models: Path, faces: Path) -> dict:
    import numpy as np

    if name == "pyav":
        import av

        with av.open(str(faces / "video/faces/ageitgey_short_hamilton_clip.mp4")) as container:
            frames = sum(1 for _ in container.decode(video=0))
        return {"workload": name, "frames": frames}
    import cv2

    from streamd.faces.engine import FaceEngine
    from streamd.settings import (
        DlibDetectorSettings,
        DlibEmbedderSettings,
        EngineSettings,
        OnnxDetectorSettings,
        OnnxEmbedderSettings,
        PaddleDetectorSettings,
        PaddleEmbedderSettings,
    )

    engines = {
        "dlib": lambda: EngineSettings(detector=DlibDetectorSettings(), embedder=DlibEmbedderSettings()),
        "onnx": lambda: EngineSettings(
            detector=OnnxDetectorSettings(model_path=models / "yunet_2023mar/face_detection_yunet_2023mar.onnx"),
            embedder=OnnxEmbedderSettings(model_path=models / "mobilefacenet_foamliu/MobileFaceNet.onnx"),
        ),
        "paddle": lambda: EngineSettings(
            detector=PaddleDetectorSettings(model_dir=models / "blazeface_fpn_ssh_1000e_v1.0_infer"),
            embedder=PaddleEmbedderSettings(model_dir=models / "mobileface_v1.0_infer"),
        ),
    }
    engine = FaceEngine.from_settings(engines[name]())
    image = cv2.imread(str(faces / "identities_small/Joe_Biden/ageitgey_biden.jpg"))
    results = engine.analyze(image)
    vectors = [r.vector for r in results if r.vector is not None]
    return {
        "workload": name,
        "faces": len(results),
        "checksum": round(float(np.sum(vectors[0])), 4) if vectors else None,
    }


def main() -> None:
    args = sys.argv[1:]
    name, models, faces = args[0], Path(args[1]), Path(args[2])
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise SystemExit("PR_SET_NO_NEW_PRIVS failed")
    sandbox = {}
    if "--seccomp" in args:
        sandbox["seccomp_allowed"] = apply_seccomp(["@system-service"], ["@privileged"])
        # Proof that the filter is on: chroot (in @privileged) fails even for root.
        try:
            os.chroot("/")
            sandbox["chroot_blocked"] = False
        except PermissionError:
            sandbox["chroot_blocked"] = True
    if "--mdwe" in args:
        if libc.prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0) != 0:
            raise SystemExit(f"PR_SET_MDWE failed (errno {ctypes.get_errno()}); needs Linux 6.3+")
        # Proof that it is on: an anonymous writable and executable mapping is refused.
        try:
            mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC).close()
            sandbox["wx_refused"] = False
        except PermissionError:
            sandbox["wx_refused"] = True
    try:
        result = workload(name, models, faces)
    except Exception as exc:  # noqa: BLE001 - reported to the test as data
        result = {"workload": name, "error": f"{type(exc).__name__}: {exc}"}
    print(json.dumps({**result, **sandbox}))


if __name__ == "__main__":
    main()
