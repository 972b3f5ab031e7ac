"""Helpers the library tests share: copy a skill version into a library, edit its manifest, copy shipped skills."""

import json
import shutil
from pathlib import Path

SHIPPED = Path(__file__).resolve().parent.parent / "trained"


def copy_version(src: Path, library: Path, name: str = "multigoal", version: int = 1) -> Path:
    dst = library / name / f"v{version}"
    shutil.copytree(src, dst)
    manifest = json.loads((dst / "manifest.json").read_text())
    (dst / "manifest.json").write_text(json.dumps(manifest | {"name": name, "version": version}))
    return dst


def edit_manifest(path: Path, **fields) -> None:
    manifest = json.loads((path / "manifest.json").read_text())
    (path / "manifest.json").write_text(json.dumps(manifest | fields))


def shipped_library(root: Path, names: tuple[str, ...]) -> Path:
    """A writable library at ``root`` holding copies of the shipped ``names`` (skills or the ``.composed`` cache)."""
    for name in names:
        shutil.copytree(SHIPPED / name, root / name)
    return root
