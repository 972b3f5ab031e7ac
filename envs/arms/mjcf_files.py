"""A user's MJCF file, read safely before dm_control or MuJoCo sees it.

``read_mjcf(path)`` reads the model and everything it names (``<include file>``, mesh, height-field, skin and texture
files, resolved as MuJoCo does: includes from the model's folder, assets through ``<compiler meshdir texturedir
assetdir>``), each through ``envs.files.open_regular``: a regular file inside the model's own folder (no device, FIFO
or link out of it), of bounded size. Each XML file is checked by a streaming parser before it is parsed into a tree:
no DOCTYPE (so no entities, internal or external), nesting at most ``MAX_DEPTH`` deep, at most ``MAX_ELEMENTS``
elements and ``MAX_BODIES`` bodies in all, no include cycle or repeated include. dm_control then builds the model
from these bytes alone (``mjcf.from_xml_string`` with the files as its assets), so nothing else is read.

Every refusal is a ``ValueError`` naming the file and the reason: one line on the command lines, never a traceback,
and never a multi-minute compile of a huge model.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path
from xml.parsers import expat

from ..files import read_bounded

MAX_XML_BYTES = 8 << 20  # one MJCF file (dm_control's Jaco: 11 KB)
MAX_ASSET_BYTES = 64 << 20  # one mesh or texture file
MAX_TOTAL_BYTES = 256 << 20  # everything a model reads
MAX_INCLUDES = 64
MAX_DEPTH = 64  # element nesting (an arm's bodies nest about 10 deep)
MAX_ELEMENTS = 20_000
MAX_BODIES = 500  # an arm has tens (the Jaco with its hand: 17); a 10,000-body model compiled for minutes
GENERATORS = frozenset({"composite", "flexcomp", "replicate"})
"""Elements that make bodies from a count (a 1 KB ``<flexcomp count="100 100 1">`` is 10,000 bodies, minutes of
compile) or read a file dm_control does not hand over as an asset (``<flexcomp file>``, which MuJoCo then opens from
the working directory): refused, as no arm needs them."""
ASSET_DIR = {"mesh": "meshdir", "hfield": "meshdir", "skin": "meshdir", "texture": "texturedir"}


class MJCFError(ValueError):
    """An MJCF file (or a file it names) that is refused: not XML, unsafe, too large, or malformed."""


class _Reader:
    """The files of one model: the XML trees in include order, the bytes read so far, and the counts."""

    def __init__(self, main: Path):
        self.main = main
        self.folder = Path(os.path.realpath(main)).parent
        self.trees: list[ET.Element] = []
        self.assets: dict[str, bytes] = {}
        self.seen: set[Path] = set()
        self.total = 0
        self.counts = {"elements": 0, "bodies": 0}

    def read(self, path: Path, limit: int, what: str) -> bytes:
        """A file inside the model's folder, regular, at most ``limit`` bytes (and ``MAX_TOTAL_BYTES`` in all)."""
        try:
            data = read_bounded(path, limit, inside=self.folder, what=what)
        except FileNotFoundError:
            raise MJCFError(f"{what} {path} (named by {self.main}) does not exist") from None
        except ValueError as err:
            raise MJCFError(f"{err} (MJCF files are read from the model's own folder, {self.folder})") from None
        self.total += len(data)
        if self.total > MAX_TOTAL_BYTES:
            raise MJCFError(f"{self.main}: the model and the files it names exceed {MAX_TOTAL_BYTES} bytes")
        return data

    def xml(self, path: Path, what: str) -> bytes:
        """Read and check (``check_xml``) one XML file of the model, keep its tree; its includes follow, depth first
        (each kept among the assets under the name that includes it). Returns its bytes."""
        real = Path(os.path.realpath(path))
        if real in self.seen:
            raise MJCFError(f"{path} is included more than once (an include cycle, or a repeated include)")
        self.seen.add(real)
        if len(self.seen) > MAX_INCLUDES + 1:
            raise MJCFError(f"{self.main}: more than {MAX_INCLUDES} included files")
        data = self.read(path, MAX_XML_BYTES, what)
        root = check_xml(data, str(path), self.counts)
        self.trees.append(root)
        for include in root.iter("include"):
            name = include.get("file")
            if not name:
                raise MJCFError(f"{path}: an <include> without a file")
            self.assets[name] = self.xml(self.folder / name, "included MJCF file")  # MuJoCo: from the model's folder
        return data

    def asset_files(self) -> None:
        """Every file an element names (``file``, ``fileright``, ...), from its directory (``<compiler meshdir
        texturedir assetdir>``, the last given) under the model's folder, kept by the name the model uses."""
        dirs: dict[str, str] = {}
        for tree in self.trees:
            for compiler in tree.iter("compiler"):
                dirs |= {k: v for k, v in compiler.attrib.items() if k in ("meshdir", "texturedir", "assetdir")}
        for tree in self.trees:
            for element in tree.iter():
                if element.tag == "include":
                    continue
                for key, name in element.attrib.items():
                    if not key.startswith("file") or not name or name in self.assets:
                        continue
                    base = dirs.get(ASSET_DIR.get(element.tag, "assetdir")) or dirs.get("assetdir") or ""
                    self.assets[name] = self.read(self.folder / base / name, MAX_ASSET_BYTES,
                                                  f"file of <{element.tag} {key}>")


def read_mjcf(path: str | os.PathLike) -> tuple[bytes, dict[str, bytes], Path]:
    """The checked bytes of the MJCF file at ``path``, every file it names (by the name it uses), and its folder:
    what ``mjcf.from_xml_string(xml, model_dir=folder, assets=assets)`` needs to build it without reading anything
    else. ``MJCFError`` (a ``ValueError``) naming the file and the reason when anything is refused."""
    reader = _Reader(Path(path))
    xml = reader.xml(Path(path), "MJCF file")
    reader.asset_files()
    return xml, reader.assets, reader.folder


def check_xml(data: bytes, where: str, counts: dict[str, int]) -> ET.Element:
    """Stream ``data`` through expat (no tree, no recursion) refusing a DOCTYPE or entity declaration, nesting deeper
    than ``MAX_DEPTH`` and more than ``MAX_ELEMENTS`` elements or ``MAX_BODIES`` bodies (``counts`` accumulates over
    a model's files); then the parsed tree, whose root must be ``<mujoco>``."""
    depth = [0]

    def refuse_doctype(*_: object) -> None:
        raise MJCFError(f"{where}: declares a DOCTYPE or an entity; MJCF needs none, and they are refused")

    def start(name: str, _attrs: object) -> None:
        if name in GENERATORS:
            raise MJCFError(f"{where}: <{name}> is refused: it makes bodies from a count (or reads a file) that these "
                            "checks cannot bound; an arm for these tasks needs none")
        depth[0] += 1
        counts["elements"] += 1
        counts["bodies"] += name == "body"
        if depth[0] > MAX_DEPTH:
            raise MJCFError(f"{where}: elements nest more than {MAX_DEPTH} deep")
        if counts["elements"] > MAX_ELEMENTS or counts["bodies"] > MAX_BODIES:
            raise MJCFError(f"{where}: more than {MAX_BODIES} bodies or {MAX_ELEMENTS} elements in the model; an arm "
                            "for these tasks has tens")

    def end(_name: str) -> None:
        depth[0] -= 1

    parser = expat.ParserCreate()
    parser.StartDoctypeDeclHandler = refuse_doctype
    parser.EntityDeclHandler = refuse_doctype
    parser.StartElementHandler = start
    parser.EndElementHandler = end
    try:
        parser.Parse(data, True)
        root = ET.fromstring(data)
    except (expat.ExpatError, ET.ParseError) as err:
        raise MJCFError(f"{where}: not an XML file ({err})") from None
    if root.tag != "mujoco":
        raise MJCFError(f"{where}: the root element is <{root.tag}>, not <mujoco>")
    return root
