"""Subband file names and grouping.

Files are ``YYYY-MM-DDTHH:MM:SS_sbNN.hdf5`` (NN = 00..15, sb00 the highest frequency), written as
``..._sbNN_incomplete.hdf5`` and renamed when complete. Each correlator node stamps its own clock,
so one group's names differ by seconds: a group is the set of files within
``group_tolerance_s`` of its first (earliest) file, and is named after that file's timestamp.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

__all__ = ["SubbandFile", "Group", "parse_subband_name", "subband_name", "group_files", "scan_folder"]

_NAME = re.compile(r"^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})_sb(\d{2})\.hdf5$")
TIME_FORMAT = "%Y-%m-%dT%H:%M:%S"


@dataclass(frozen=True, order=True)
class SubbandFile:
    timestamp: datetime
    subband: int
    path: Path = field(compare=False)


@dataclass
class Group:
    """One unit of work: a DSA-110 group of up to ``n_subbands`` files keyed by subband index
    (``kind`` "subbands"), or one visibility file of any array (``kind`` "file": ``files`` is
    ``{0: path}`` and the id is the file's name)."""

    group_id: str  # subbands: the first file's timestamp, YYYY-MM-DDTHH:MM:SS; file: the file's name
    files: dict[int, Path]
    duplicates: list[Path] = field(default_factory=list)
    kind: str = "subbands"  # "subbands" | "file"
    registered_unix: float | None = None  # file: when it was queued (its id holds no time)

    @property
    def start(self) -> datetime:
        """Subbands: the time in the id (UTC, naive); file: when it was queued (UTC, naive)."""
        if self.kind == "file":
            return datetime.fromtimestamp(self.registered_unix or 0.0, timezone.utc).replace(tzinfo=None)
        return datetime.strptime(self.group_id, TIME_FORMAT)

    def missing(self, n_subbands: int) -> list[int]:
        return [sb for sb in range(n_subbands) if sb not in self.files]


def parse_subband_name(path: str | Path) -> SubbandFile | None:
    """The timestamp and subband of a complete subband file's name, or None for other names
    (including ``_incomplete`` files still being written)."""
    path = Path(path)
    m = _NAME.match(path.name)
    if not m:
        return None
    return SubbandFile(datetime.strptime(m.group(1), TIME_FORMAT), int(m.group(2)), path)


def subband_name(timestamp: datetime, subband: int, *, incomplete: bool = False) -> str:
    suffix = "_incomplete" if incomplete else ""
    return f"{timestamp.strftime(TIME_FORMAT)}_sb{subband:02d}{suffix}.hdf5"


def group_files(files: list[SubbandFile], *, tolerance_s: float) -> list[Group]:
    """Group subband files by time: each group opens at the earliest unassigned file and takes the
    files within ``tolerance_s`` of it. A second file for a subband already in the group is kept
    aside in ``duplicates``."""
    groups: list[Group] = []
    tol = timedelta(seconds=tolerance_s)
    current: Group | None = None
    for f in sorted(files):
        if current is None or f.timestamp - current.start > tol:
            current = Group(group_id=f.timestamp.strftime(TIME_FORMAT), files={})
            groups.append(current)
        if f.subband in current.files:
            current.duplicates.append(f.path)
        else:
            current.files[f.subband] = f.path
    return groups


def scan_folder(folder: str | Path) -> list[SubbandFile]:
    """Every complete subband file directly in ``folder``."""
    out = []
    for p in Path(folder).iterdir():
        f = parse_subband_name(p)
        if f is not None and p.is_file():
            out.append(f)
    return out
