"""Helpers the library tests share: copy a skill version into a library, edit its manifest."""

import json
import shutil
from pathlib import Path


def copy_version(src: Path, library: Path, name: str = "multigoal", version: int = 1) -> Path:
    dst = library / name / f"v{version}"
    shutil.copytree(src, dst)
    manifest = json.loads((dst / "manifest.json").read_text())
    (dst / "manifest.json").write_text(json.dumps(manifest | {"name": name, "version": version}))
    return dst


def edit_manifest(path: Path, **fields) -> None:
    manifest = json.loads((path / "manifest.json").read_text())
    (path / "manifest.json").write_text(json.dumps(manifest | fields))
