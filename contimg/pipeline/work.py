"""`GroupWork`: one group on its way through the stages, and what they found; the stages'
names and the intermediates they leave."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from contimg.calibrate import GainSolution, TimeGains
from contimg.calibrate.subtract import SubtractedSource
from contimg.imaging.imager import ImageSet
from contimg.io.chunk import VisChunk
from contimg.io.naming import Group
from contimg.pipeline.generic import CalResult, Observation
from contimg.qa.gates import Gate
from contimg.sky.skymodel import PointSources

__all__ = ["STAGES", "CHECKPOINT_FILES", "DEFERRED_INTERMEDIATES", "GroupWork"]

STAGES = ("read", "flag", "calibrate", "image", "write")
# the intermediate that a finished stage leaves; "read" leaves none (the raw files are the archive)
CHECKPOINT_FILES = {"flag": "flags.zarr", "calibrate": "cal.zarr", "image": "image.zarr"}
# what the service's writer stores for the processor (`GroupWork.defer_intermediates`): image.zarr,
# with the FITS files (0.6 s of Zarr at real size, and much more on a busy disk). flags.zarr is
# stored by the flag stage (the live waterfall reads its summary as soon as that ends), cal.zarr by
# calibrate (a few MB: a crash while imaging then resumes with the calibration done)
DEFERRED_INTERMEDIATES = frozenset({"image"})


@dataclass
class GroupWork:
    """One group on its way through the stages, and what they found."""

    group: Group
    root: Path
    checkpoint: str = ""  # last stage whose intermediate is stored ("" = none)
    # the stages whose intermediates wait for the write stage (`store_deferred`, on the writer's
    # thread, off the processor's; the checkpoint advances only as they are stored): the service
    # defers image's (`DEFERRED_INTERMEDIATES`); the others are stored at once
    defer_intermediates: frozenset[str] = frozenset()
    deferred: list[tuple[str, Callable[[], object]]] = field(default_factory=list)
    chunk: VisChunk | None = None
    # called (in the stage's thread) once the stages no longer need ``chunk``'s visibilities and have
    # dropped them (imaging, after forming Stokes I): the service may then read the next group
    on_chunk_freed: Callable[[], None] | None = None
    meta: dict = field(default_factory=dict)  # times (MJD), pointing, subbands, problems: kept for `write`
    sol: GainSolution | None = None  # the bandpass applied (solved here, or from the registry)
    tgains: TimeGains | None = None  # the time gains solved here, applied per integration
    calibrator: str = ""
    cal_applied: bool = False
    subtracted: list[SubtractedSource] = field(default_factory=list)
    # calibration registry: the shell hands the calibrate stage the active rows near the group's
    # time (`CalRegistry.candidates`) and registers the rows a solve leaves (bandpass, then time
    # gains; the stages open no database); cal_rejected: why this group's own solve was rejected
    cal_candidates: list[dict] = field(default_factory=list)
    cal_registrations: list[dict] = field(default_factory=list)
    cal_rejected: list[str] = field(default_factory=list)
    imgs: ImageSet | None = None
    products: list[str] = field(default_factory=list)
    image_rows: list[dict] = field(default_factory=list)
    flag_fraction: float = float("nan")
    attempt: int = 1
    calibrator_group: bool = False  # a listed calibrator transits (scheduled first)
    timings_s: dict[str, float] = field(default_factory=dict)
    # QA: set by the shell before the stages run ...
    catalogue: PointSources | None = None  # cross-match and photometry (None: skipped)
    reference_beam_arcsec: tuple[float, float] | None = None
    # ... and filled by them, for the shell to record
    gates: dict[str, Gate] = field(default_factory=dict)
    gates_recorded: set[str] = field(default_factory=set)  # stages whose gate the shell has stored
    artifacts: list[tuple[str, str]] = field(default_factory=list)  # (kind, path) of diagnostic PNGs
    # with ``defer_plots`` (the service), the stages' diagnostic PNGs are not drawn in the stage's
    # thread (the processor's: the device's on a GPU host) but kept in ``plot_draws`` for the
    # service to draw on another (`add_plot`)
    defer_plots: bool = False
    plot_draws: list[tuple[str, Callable[[], object]]] = field(default_factory=list)
    detections: list[dict] = field(default_factory=list)
    photometry: list[dict] = field(default_factory=list)
    # a file group (``group.kind == "file"``, `contimg.pipeline.filestages`): the file's
    # observation, its calibration, and per field (clean name) its images or why it has none
    observation: Observation | None = None
    file_cal: CalResult | None = None
    field_images: dict[str, ImageSet] = field(default_factory=dict)
    field_errors: dict[str, str] = field(default_factory=dict)
    summary: dict = field(default_factory=dict)  # written as summary.json by the file group's write stage

    @property
    def group_id(self) -> str:
        return self.group.group_id

    @property
    def kind(self) -> str:
        """"subbands" (a DSA-110 group) or "file" (one visibility file of any array)."""
        return self.group.kind

    @property
    def out_dir(self) -> Path:
        return self.root / "products" / self.group_id

    @property
    def cal_dir(self) -> Path:
        return self.root / "cal"

    def keep_intermediate(self, stage: str, store: Callable[[], object]) -> None:
        """``stage``'s intermediate: ``store()`` writes it. Called now, then the checkpoint is
        ``stage``; or, for a stage in ``defer_intermediates``, kept for `store_deferred` (a group
        that fails before its write stage drops what it kept: a retry recomputes it)."""
        if stage in self.defer_intermediates or self.deferred:  # (after a deferred one: in order)
            self.deferred.append((stage, store))
        else:
            store()
            self.checkpoint = stage

    def add_plot(self, kind: str, draw: Callable[[], object]) -> None:
        """A diagnostic PNG of ``kind``: ``draw()`` writes it and returns its path (or None: nothing
        to show). Drawn now, its path into ``artifacts``; or, with ``defer_plots``, kept in
        ``plot_draws`` for the caller to draw elsewhere. ``draw`` holds what the plot shows (small
        arrays), never the chunk or this work: it may outlive the stage."""
        if self.defer_plots:
            self.plot_draws.append((kind, draw))
        elif (path := draw()) is not None:
            self.artifacts.append((kind, str(path)))

    def store_deferred(self) -> None:
        """Store the deferred intermediates in stage order, the checkpoint advancing with each
        (a failure leaves it at the last one stored)."""
        while self.deferred:
            stage, store = self.deferred[0]
            store()
            self.deferred.pop(0)
            self.checkpoint = stage

    def done(self, stage: str) -> bool:
        """Whether ``stage``'s result is stored (so the stage replays it instead of computing)."""
        return bool(self.checkpoint) and STAGES.index(self.checkpoint) >= STAGES.index(stage)
