"""The skill library: the manifest model, versioned directories on disk, reading and writing a skill, and
resolving names (``skills.library.catalog``).

Layers, each importing only those before it: ``manifest`` (the typed manifest and its checks), ``store``
(versions claimed and published atomically, safe under concurrent writers and crashes), ``files`` (a skill's
files written and read back checked), ``catalog`` (names, versions, listing, staleness), ``transfer`` (skills
trained elsewhere added to a library, checked: ``python -m skills.add``), ``skill`` (a loaded ``Skill`` and
``load``).
"""

from __future__ import annotations

from .catalog import (
    SkillEntry,
    StaleSkillError,
    check_fresh,
    claim_version_dir,
    constituents_library,
    default_library,
    inside_library,
    is_path,
    list_skills,
    resolve,
    stale_constituents,
)
from .files import (
    agent_tensors,
    library_versions,
    load_manifest,
    read_skill,
    sha256_file,
    space_record,
    update_manifest,
    write_skill,
)
from .manifest import CorruptSkillError, Manifest, SkillError, UnsupportedFormatError
from .skill import Skill, TaskChangedError, check_task_definition, load, registered_task, task_of
from .store import (
    abandoned,
    atomic_write_text,
    claim_version,
    is_claim_only,
    publish_directory,
    release_claim,
    staging_directory,
)

__all__ = [
    "CorruptSkillError", "Manifest", "Skill", "SkillEntry", "SkillError", "StaleSkillError", "TaskChangedError",
    "UnsupportedFormatError", "check_task_definition", "registered_task", "task_of",
    "abandoned", "agent_tensors", "atomic_write_text", "check_fresh", "claim_version", "claim_version_dir",
    "constituents_library", "default_library", "inside_library", "is_claim_only", "is_path", "library_versions",
    "list_skills", "load", "load_manifest", "publish_directory",
    "read_skill", "release_claim", "resolve", "sha256_file", "space_record", "stale_constituents", "staging_directory",
    "update_manifest", "write_skill",
]
