"""The REST API's response models (pydantic): what `/api/docs` documents and the routes return."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

class TaskHealth(BaseModel):
    task: str
    state: Literal["ok", "degraded", "failed", "stopped"]


class SelfCheckFigureOut(BaseModel):
    """One number of a stage's self-check: its device path against the CPU twin."""

    value: float
    limit: float
    ok: bool


class StageBackendOut(BaseModel):
    """The backend a stage runs on, chosen at start-up, and why (`contimg.device.selfcheck`)."""

    requested: str  # the configuration's: auto, cpu or gpu
    backend: str  # cpu or gpu
    checked: bool  # the self-check ran (a device was usable and the request allowed it)
    passed: bool | None
    reason: str
    figures: dict[str, SelfCheckFigureOut] = {}
    seconds: float = 0.0


class StatusOut(BaseModel):
    """The service as a whole."""

    pid: int
    mode: str
    started_at: float
    uptime_s: float
    stopping: bool
    tasks: list[TaskHealth]
    queue: dict[str, int]  # groups by state
    queues_in_memory: dict[str, int]  # claim, read, write
    in_progress: dict[str, str]  # group → stage
    completed_last_hour: int
    backend: str
    backends: dict[str, StageBackendOut] = {}  # flag, calibrate, image: the choice and its self-check figures
    device: str
    loop_lag_ms_p99: float
    loop_lag_ms_max: float
    cluster: dict | None = None  # cluster mode: scheduler, workers, groups in flight (s), completed in the last hour
    rss_bytes: int
    disk: str
    watcher: str | None
    ws_clients: int


class GroupOut(BaseModel):
    group_id: str
    state: str
    stage: str
    checkpoint: str
    present_subbands: int
    expected_subbands: int
    retry_count: int
    error: str
    received_at: float | None
    finished_at: float | None


class StageTime(BaseModel):
    stage: str
    seconds: float
    attempt: int
    replayed: bool


class SubbandFileOut(BaseModel):
    path: str
    subband: int
    role: str
    size: int


class GroupDetail(GroupOut):
    problems: list[str]
    timings: list[StageTime]
    files: list[SubbandFileOut]
    images: list[int]


class MsIndexRow(BaseModel):
    group_id: str
    status: str | None = None
    stage: str | None = None
    start_mjd: float | None = None
    end_mjd: float | None = None
    mid_mjd: float | None = None
    cal_applied: int | None = None
    calibrator: str | None = None
    image_name: str | None = None
    ra_deg: float | None = None
    dec_deg: float | None = None
    n_subbands: int | None = None
    error: str | None = None


class ImageOut(BaseModel):
    id: int
    group_id: str
    type: str
    bmaj_arcsec: float
    bmin_arcsec: float
    bpa_deg: float
    noise_jy: float
    peak_jy: float
    dynamic_range: float
    pbcor: bool
    fits_url: str
    thumbnail_url: str


class CalTableOut(BaseModel):
    """One registered solution table (`contimg.state.calregistry`); ``name`` is its set (the group solved on)."""

    name: str
    calibrator: str
    refant: str
    mid_mjd: float
    median_snr: float | None
    n_antennas: int
    n_channels: int
    status: str = Field(description="active (applied to groups in its window), rejected (failed its quality gate; never applied) or superseded")
    cal_type: str
    apply_order: int
    valid_start_mjd: float
    valid_end_mjd: float
    created_at: float
    quality: dict = Field(default_factory=dict, description="the solution quality gate: passed, metrics, reasons")


class GainsOut(BaseModel):
    """One antenna's gains of a solution: amplitude and phase (deg) per channel and polarization."""

    name: str
    antenna: int
    freq_mhz: list[float]
    amp: list[list[float | None]]  # (npol, nchan); None where flagged
    phase_deg: list[list[float | None]]


class FlagsOut(BaseModel):
    group_id: str
    fraction: float
    per_antenna: list[float | None]  # by antenna number; None for antennas not in the data
    per_channel: list[float]


class FlagWaterfallOut(BaseModel):
    group_id: str
    flagged: list[list[float]]  # (ntime, nbins) in [0, 1]


class QAOut(BaseModel):
    group_id: str
    flag_fraction: float | None
    noise_jy: float | None
    peak_jy: float | None
    dynamic_range: float | None
    bmaj_arcsec: float | None
    bmin_arcsec: float | None
    cal_applied: bool
    calibrator: str
    qa_passed: bool | None = None
    gates: list[GateOut] = []


class GateOut(BaseModel):
    stage: str
    passed: bool
    metrics: dict
    reasons: list[str]


class ArtifactOut(BaseModel):
    kind: str
    url: str


class PhotometryOut(BaseModel):
    group_id: str
    source: str
    mid_mjd: float
    flux_jy: float
    err_jy: float
    noise_jy: float
    pb: float
    catalogue_flux_jy: float


class QADetail(BaseModel):
    group_id: str
    gates: list[GateOut]
    artifacts: list[ArtifactOut]
    n_detections: int
    photometry: list[PhotometryOut]


class VariableOut(BaseModel):
    source: str
    n: int
    mean_flux_jy: float | None
    eta: float | None
    v: float | None
    candidate: bool


class LightcurveOut(BaseModel):
    source: str
    points: list[PhotometryOut]
    stats: VariableOut | None


class AlertOut(BaseModel):
    severity: str
    category: str
    message: str
    at: float


class ReprocessOut(BaseModel):
    group_id: str
    from_stage: str
    state: str


class ViewMeta(BaseModel):
    """What the viewer needs of an image or a mosaic plane: size, the SIN projection's keywords,
    statistics of its finite pixels."""

    nx: int
    ny: int
    step: int = Field(description="the whole image goes to the viewer as every step-th pixel (1 up to 2048²)")
    bunit: str
    ctype1: str
    ctype2: str
    crval1: float
    crval2: float
    crpix1: float
    crpix2: float
    cdelt1: float
    cdelt2: float
    freq_hz: float
    date_obs: str
    bmaj_deg: float | None
    bmin_deg: float | None
    bpa_deg: float | None
    min: float
    max: float
    p0_5: float
    p1: float
    median: float
    p99: float
    p99_5: float
    p99_9: float
    rms_mad: float
    finite_fraction: float = Field(description="the fraction of pixels with a value (a mosaic is blank where no image reaches)")
    data_box: list[int] = Field(description="[x0, x1, y0, y1): the box holding every finite pixel")


class ImageMetaOut(ViewMeta):
    id: int
    group_id: str
    type: str


class MosaicMetaOut(ViewMeta):
    name: str
    kind: str
    status: str
    plane: str
    read_from: Literal["zarr", "fits"] = Field(description="a running span's Zarr planes or a complete mosaic's FITS")
    start_mjd: float
    end_mjd: float
    n_groups: int
    groups: list[str]
    noise_median_jy: float | None


class OverlaySource(BaseModel):
    source: str
    x: float
    y: float
    ra_deg: float
    dec_deg: float
    flux_jy: float
    err_jy: float
    catalogue_flux_jy: float
    candidate: bool


class OverlayOwn(BaseModel):
    """A source of the pipeline's own catalogue, measured (forced photometry) in this image or
    mosaic, or (a mosaic not yet searched) at its catalogue flux."""

    source: str
    x: float
    y: float
    ra_deg: float
    dec_deg: float
    flux_jy: float | None
    err_jy: float | None
    mean_flux_jy: float | None
    n_detections: int
    eta: float | None
    v: float | None
    variable: bool


class OverlayFound(BaseModel):
    x: float
    y: float
    ra_deg: float
    dec_deg: float
    peak_jy: float
    snr: float
    match: str


class OverlayTransient(BaseModel):
    id: str
    image: str
    x: float
    y: float
    ra_deg: float
    dec_deg: float
    flux_jy: float
    snr: float
    status: str
    cutout_url: str | None


class OverlayOut(BaseModel):
    image_id: int | None = None
    group_id: str | None = None
    mosaic: str | None = None
    catalogue: list[OverlaySource]
    own: list[OverlayOwn] = []
    found: list[OverlayFound]
    transients: list[OverlayTransient] = []


class SourcePoint(BaseModel):
    group_id: str = Field(description="the group (image) measured")
    mid_mjd: float
    flux_jy: float
    err_jy: float
    noise_jy: float
    pb: float
    catalogue_flux_jy: float | None = Field(description="the external catalogue's flux, or the own catalogue's mean of its detections")
    x: float
    y: float
    image_id: int | None


class SourceStats(BaseModel):
    n: int
    mean_flux_jy: float | None
    eta: float | None
    v: float | None
    candidate: bool


class SourceTransient(BaseModel):
    id: str
    image: str
    mid_mjd: float
    flux_jy: float
    snr: float
    status: str
    cutout_url: str | None


class SourceOut(BaseModel):
    source: str
    catalogue: Literal["external", "own"] = "external"
    ra_deg: float
    dec_deg: float
    points: list[SourcePoint]
    stats: SourceStats | None
    own: dict | None = Field(None, description="the own catalogue's row: detections, first/last seen, shape, external match")
    transients: list[SourceTransient] = []
