"""One typed, validated configuration model, loaded from ``configs/*.toml``.

Unknown keys and bad values are refused when the file is loaded, with the key named
(pydantic's ``extra="forbid"`` and field constraints). A config file may name a
``base`` config (``base = "dsa110"``) whose values it overrides table by table.

Environment overrides: ``CONTIMG__<TABLE>__<KEY>=value`` (e.g.
``CONTIMG__IMAGE__NPIX=1024``) are applied after the file, parsed as TOML values; a refused
value names the variable.
"""

from __future__ import annotations

import os
import tomllib
from importlib import resources
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

__all__ = ["Config", "ConfigError", "config_from_dict", "load_config", "packaged_config_names"]


class ConfigError(ValueError):
    """A configuration file or value was refused; the message names the key."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SimulateConfig(_Section):
    """What `contimg simulate` writes (sizes default to the real telescope)."""

    n_antennas: int | None = Field(None, ge=2, le=96, description="active antennas used; None = all 96")
    n_subbands: int = Field(16, ge=1, le=16, description="subband files per group")
    chans_per_subband: int = Field(48, ge=1, le=48, description="fewer channels are wider: the band stays 1311-1499 MHz")
    n_times: int = Field(24, ge=1, description="integrations per group")
    int_time_s: float = Field(12.884902, gt=0)
    start_time_utc: str = Field("2026-03-21T10:00:00", description="the calibrator's first transit after this sets the start")
    pointing_dec_deg: float | None = Field(None, ge=-30, le=90, description="None = the calibrator's declination")
    calibrator: str = Field("1331+305", description="VLA calibrator list name (J2000) that transits")
    calibrator_group: int | None = Field(0, ge=0, description="the group at whose mid-time it transits; None = no calibrator")
    bright_min_flux_jy: float = Field(1.0, gt=0, description="listed calibrators this bright near the fields are in the sky")
    n_faint_sources: int = Field(25, ge=0)
    faint_flux_jy: tuple[float, float] = Field((0.05, 0.5), description="log-uniform flux range of the faint population")
    faint_radius_deg: float = Field(1.0, gt=0, description="faint sources lie within this of each group's field centre")
    faint_min_separation_deg: float = Field(0.15, ge=0)
    sefd_jy: float = Field(6500.0, ge=0, description="single-dish SEFD; 0 for no noise")
    gain_amp_scatter: float = Field(0.1, ge=0)
    gain_phase_scatter_deg: float = Field(30.0, ge=0)
    bandpass_ripple: float = Field(0.05, ge=0)
    gain_phase_drift_deg_per_hour: float = 0.0
    dead_antennas: list[str] = Field(default_factory=list, description="antennas (names) that record only noise: their bandpass is 0 in truth.h5")
    rfi: bool = Field(True, description="narrow-band, burst and spike RFI, recorded in truth.h5")
    clock_jitter_s: float = Field(3.0, ge=0, description="spread of the per-subband file timestamps")
    group_interval_s: float | None = Field(None, gt=0, description="None = n_times * int_time_s")
    variable_flux_jy: list[float] = Field(default_factory=list, description="a variable source near the middle group's field centre: its flux (1.4 GHz, flat spectrum) in each group; empty = none")
    variable_offset_deg: float = Field(0.2, description="its declination offset from that field centre")
    # --- strip mode and injected transients (mosaics, the pipeline's own catalogue) ---
    sky_mode: Literal["fields", "strip"] = Field("fields", description="fields: n_faint_sources around each group's field centre; strip: one fixed sky spread uniformly over the whole strip the groups drift through (and a margin beyond its ends), as the mosaic and catalogue tests need")
    strip_sources_per_deg2: float = Field(1.5, ge=0, description="strip mode: faint sources per square degree (fluxes from faint_flux_jy)")
    strip_halfwidth_deg: float = Field(2.5, gt=0, description="strip mode: the sky extends this far north and south of the pointing declination")
    strip_margin_deg: float = Field(2.5, ge=0, description="strip mode: ... and this far (on the sky) east and west beyond the last and first fields' centres")
    transient_flux_jy: float = Field(0.0, ge=0, description="a transient (1.4 GHz, flat spectrum) on during one group only; 0 = none")
    transient_group: int = Field(1, ge=0, description="the group it is on in")
    transient_offset_deg: tuple[float, float] = Field((0.3, -0.4), description="its (east, north) offset on the sky from that group's field centre")
    seed: int = 2026


class GroupingConfig(_Section):
    group_tolerance_s: float = Field(60.0, gt=0, description="files this close to a group's first file belong to it")
    n_subbands: int = Field(16, ge=1, le=16)
    on_bad_subband: Literal["flag", "fail"] = Field("flag", description="a missing/unreadable/mismatched subband: flag its channels, or fail the group")
    min_subbands: int = Field(8, ge=1, le=16, description="fewer usable subbands than this fails the group")


class FlagConfig(_Section):
    backend: Literal["auto", "cpu", "gpu"] = Field("auto", description="gpu: CuPy array code on the device; cpu: the numba twin; auto: gpu when a CUDA device is usable")
    keep_input_flags: bool = Field(True, description="keep the flags the files carry (False: start from none)")
    flag_autocorrelations: bool = Field(True, description="flag autocorrelations (out of imaging; their data stay in the chunk for QA)")
    first_threshold_sigma: float = Field(5.0, gt=0, description="SumThreshold chi_1: a single sample this many robust sigmas from the background is flagged")
    threshold_rho: float = Field(1.41421356, gt=1, description="chi_M = chi_1 / rho^log2(M) for windows of M = 1, 2, 4, ... samples (sqrt 2: the same significance for every window; AOFlagger's 1.5 flags a calibrator's smooth slope)")
    max_window: int = Field(16, ge=1, description="longest SumThreshold window (samples), along time and along frequency")
    iterations: int = Field(3, ge=1, description="background fits; iteration i uses the thresholds x iteration_factor^(iterations-1-i)")
    iteration_factor: float = Field(2.0, ge=1)
    background_box_time: int = Field(5, ge=1, description="width (integrations, odd) of the box applied three times along time for the smooth background")
    background_box_chan: int = Field(7, ge=1, description="width (channels, odd) of the box applied three times along frequency")
    respect_subbands: bool = Field(True, description="the frequency background stops at subband edges (when a subband has at least 2 x background_box_chan channels)")
    combine_polarizations: bool = Field(True, description="a sample flagged in one polarization is flagged in all")
    sir_eta: float = Field(0.2, ge=0, lt=1, description="scale-invariant rank dilation: an interval flagged for >= 1 - eta of its length is flagged whole (0: off)")
    baseline_average: bool = Field(True, description="also search the baseline-averaged residual plane (RFI below one baseline's noise)")
    average_threshold_sigma: float = Field(5.0, gt=0, description="chi_1 on the baseline-averaged plane, in its own robust sigmas")
    average_max_window: int = Field(1, ge=1, description="longest SumThreshold window on that plane (1: a robust clip per time and channel; longer windows catch the residue that strong RFI leaves around itself)")
    average_min_excess: float = Field(0.15, ge=0, description="... and at least this mean residual, in one baseline's robust sigmas (a bright source's common residual is not RFI)")
    dead_antenna_fraction: float = Field(0.95, gt=0, le=1, description="an antenna flagged more than this is flagged whole")
    dead_channel_fraction: float = Field(0.95, gt=0, le=1, description="a channel flagged more than this (over cross-correlations) is flagged whole")
    extend_fraction: float = Field(0.6, gt=0, le=1.0, description="a time or channel flagged more than this (per baseline, or over all) is flagged whole")


class CalibrateConfig(_Section):
    enabled: bool = True
    min_calibrator_flux_jy: float = Field(2.0, gt=0, description="L-band flux a listed calibrator needs to be solved on")
    max_calibrator_offset_deg: float = Field(1.0, gt=0, description="|calibrator dec - pointing dec| at most")
    refant: str = Field("24", description="reference antenna name; then refant_fallbacks")
    refant_fallbacks: list[str] = Field(default_factory=lambda: ["25", "26", "27", "28"])
    min_snr: float = Field(5.0, ge=0, description="gains with a lower SNR are flagged")
    min_baseline_m: float = Field(0.0, ge=0, description="baselines shorter than this are not used to solve")
    max_baseline_m: float = Field(0.0, ge=0, description="... nor longer than this (0 = no limit)")
    min_baselines_per_antenna: int = Field(4, ge=1, description="an antenna with fewer baselines carrying data in a channel (bandpass) or solution interval (time gains) gets no solution there: flagged")
    smooth_channels: int = Field(1, ge=1, description="running mean of the solved gains over this many channels (odd; 1 = none)")
    max_iter: int = Field(200, ge=1)
    backend: Literal["auto", "cpu", "gpu"] = Field("auto", description="gpu: CuPy array code on the device; cpu: the numba twin; auto: gpu when a CUDA device is usable")
    solve_delay: bool = Field(False, description="fit each antenna's delay (K) to its bandpass and take it out before smoothing over channels; stored with the bandpass (delay_s)")
    gain_calmode: Literal["ap", "p", "none"] = Field("ap", description="time-dependent gains after the bandpass: amplitude and phase (ap), phase only (p) or none")
    gain_interval_s: float = Field(60.0, ge=0, description="their solution interval (rounded to whole integrations; 0 = one per integration)")
    tolerance: float = Field(1e-6, gt=0, description="StEFCal stops when ||g_new - g|| / ||g_new|| is below this in every channel")
    bandpass_validity_hours: float = Field(24.0, gt=0, description="a registered bandpass table (the solve: one gain per antenna, channel and polarization over the group) is valid for groups whose mid-time is within this of its own (window [mid - this, mid + this])")
    gain_validity_hours: float = Field(1.0, gt=0, description="the same for tables of type gains (time-dependent gains)")
    subtract_bright_sources: bool = Field(True, description="subtract listed calibrators in the beam before imaging, restore them analytically")
    subtract_min_flux_jy: float = Field(1.0, gt=0)
    subtract_radius_deg: float = Field(3.0, gt=0)
    model_catalogue: bool = Field(True, description="add the sky catalogue's sources near the field to the calibrator model (unmodelled flux biases the gains)")
    model_radius_deg: float = Field(3.0, gt=0, description="catalogue sources within this of the field centre enter the model")
    model_min_flux_jy: float = Field(0.0, ge=0, description="... if at least this bright at the reference frequency")


class ImageConfig(_Section):
    npix: int = Field(4096, ge=32, description="image side in pixels (even)")
    cell_arcsec: float = Field(3.0, gt=0)
    weighting: Literal["natural", "uniform", "briggs"] = "briggs"
    robust: float = Field(0.0, ge=-2, le=2)
    taper_arcsec: float = Field(0.0, ge=0, description="Gaussian uv taper: the FWHM (image plane) of the Gaussian it convolves the image with; 0 = none")
    uv_min_lambda: float = Field(0.0, ge=0, description="visibilities with a shorter uv distance (wavelengths) are not imaged; 0 = no limit")
    uv_max_lambda: float = Field(0.0, ge=0, description="... nor those with a longer one; 0 = no limit")
    average_channels: int = Field(1, ge=1, description="adjacent channels averaged (weighted) before gridding: the gridding work falls by this factor; the bandwidth smearing at radius r grows to average_channels x channel width / frequency x r (at 4 x 244 kHz, 2.5\" at 0.85 deg); must divide the channel count")
    average_times_max: int = Field(1, ge=1, description="baseline-dependent averaging in time: a baseline joins up to this many adjacent integrations (a divisor of the group's count) into one sample, as many as average_times_step_fraction allows; the gridding work falls with the samples; 1 = off")
    average_times_step_fraction: float = Field(0.25, gt=0, le=1, description="an averaged sample's span in the uvw space (integrations joined x the baseline's step per integration) is at most this fraction of the fastest baseline's step over one integration: its time smearing at most this fraction of that baseline's unaveraged. DSA-110 (real group): 0.25 keeps 0.63 of the samples and raises the baselines' mean time-smearing loss by ~22 %; 0.35 (0.50 of them, +54 %) lost 5-9 % of the flux of sources at the images' edges in the mosaic tests; 1 (0.31, ~5x) lost up to 7 % in the real-size truth check")
    epsilon: float = Field(1e-4, ge=1e-5, le=1e-1, description="gridding accuracy: relative error of the dirty image and the predicted visibilities (ducc0 on the CPU, contimg's w-stacking gridder on the GPU)")
    psf_w_term: bool = Field(False, description="grid the PSF with the w-term, as the images are; false: in 2D, about 5x faster for DSA-110 (a real-size group: 1.0 s against 4.9 s). The two agree at the peak and the fitted beam; further out they differ by the w-term's phase, at most 0.4 % of the peak over a 3.4 deg field. CLEAN's minor cycle uses this PSF for every source in the field, and the w-gridded PSF is exact only for a source at the centre, so neither is right far from the centre; the residual images (and the major cycles) always use the w-term")
    backend: Literal["auto", "cpu", "gpu"] = Field("auto", description="gpu: contimg's CUDA w-stacking gridder and Högbom kernel; cpu: ducc0 and numba; auto: gpu when a CUDA device is usable and the device imager passed its self-check against the CPU twins (else cpu, with an error in the log)")
    niter: int = Field(1000, ge=0, description="CLEAN components at most")
    loop_gain: float = Field(0.1, gt=0, le=1)
    threshold_sigma: float = Field(3.0, ge=0, description="CLEAN stops at this many robust RMS of the residual")
    threshold_jy: float = Field(0.0, ge=0, description="... or at this residual peak (Jy/beam), whichever is higher")
    clean_mask: str | None = Field(None, description="FITS image of npix x npix pixels (the products' order): CLEAN components only where it is non-zero; None = anywhere")
    cycle_fraction: float = Field(0.15, gt=0, lt=1, description="a minor cycle stops at this fraction of its starting peak (1 - mgain of CASA and WSClean)")
    max_major_cycles: int = Field(12, ge=1)
    pb_cutoff: float = Field(0.2, gt=0, lt=1, description="pbcor is NaN where the averaged beam is below this (CASA's pblimit)")
    products: list[Literal["dirty", "psf", "residual", "model", "restored", "pbcor"]] = Field(
        default_factory=lambda: ["dirty", "residual", "restored", "pbcor"]
    )

    @model_validator(mode="after")
    def _even(self) -> "ImageConfig":
        if self.npix % 2:
            raise ValueError(f"image.npix must be even, got {self.npix}")
        if self.clean_mask is not None:  # a bad mask is refused when the configuration is read
            from contimg.io.fits import read_clean_mask

            read_clean_mask(self.clean_mask, npix=self.npix)
        return self


class AstropyConfig(_Section):
    iers_a_file: str | None = Field(None, description="path to a fresh IERS-A file (finals2000A.all); None = bundled tables")


class RuntimeConfig(_Section):
    nthreads: int = Field(2, ge=1, description="threads for gridding")
    read_threads: int = Field(4, ge=1, description="subband files read in parallel")


class ServiceConfig(_Section):
    """The always-on service (`contimg serve`, `replay`, `run`): watching, queues, retries, shutdown."""

    incoming_dir: str = Field("incoming", description="watched folder, relative to the root unless absolute")
    use_inotify: bool = Field(True, description="inotify events where the OS has them (watchfiles); False = polling only")
    poll_interval_s: float = Field(2.0, gt=0, description="folder scan period (the fallback, and a safety net under inotify)")
    settle_s: float = Field(2.0, ge=0, description="a file is registered once its size and mtime are unchanged this long")
    collecting_timeout_s: float = Field(600.0, gt=0, description="an incomplete group waits this long after its last file")
    on_incomplete: Literal["flag", "fail"] = Field("flag", description="after the timeout: process with missing subbands flagged, or fail the group")
    prefetch: int = Field(1, ge=0, description="groups read ahead while one is processed: at most prefetch + 1 groups in memory, each from its read until its products are written and its after-group update is done")
    read_beside_imaging: bool = Field(True, description="a group is read once the one before it has formed its Stokes I visibilities for imaging (at most max(prefetch, 1) groups' full visibilities at once; over a real-size backlog ~0.24 GiB less at its peak and ~5 % slower); False: as soon as a memory slot is free")
    max_retries: int = Field(2, ge=0, description="a group failing for a transient reason is retried this often, then failed")
    retry_backoff_s: float = Field(30.0, ge=0, description="wait before a retry (doubles each time)")
    stuck_timeout_s: float = Field(3600.0, gt=0, description="an in_progress group not updated for this long goes back to pending")
    housekeeping_interval_s: float = Field(30.0, gt=0)
    disk_warning_fraction: float = Field(0.10, gt=0, lt=1, description="free fraction of the root's disk below which a warning is raised")
    disk_critical_fraction: float = Field(0.03, gt=0, lt=1, description="below this, no new group is started")
    shutdown_grace_s: float = Field(30.0, gt=0, description="SIGTERM: finish or checkpoint the group in hand within this, then exit 0")
    restart_backoff_s: float = Field(1.0, gt=0, description="first restart delay of a crashed task (doubles, capped at 60 s)")
    max_task_restarts: int = Field(10, ge=0, description="a task crashing more often than this in 10 minutes is marked failed")
    malloc_mmap_threshold_mib: float = Field(1.0, ge=0, le=32, description="glibc: allocations of at least this many MiB are their own mappings, returned to the OS when freed (0 = glibc's own moving threshold, which keeps freed 1-32 MiB arrays in the heap)")
    worker_nice: int = Field(10, ge=0, le=19, description="niceness added to the worker threads (and the threads they start: h5py, numba, ducc0), so the event loop gets a core at once on a busy machine")
    stall_trace_ms: float = Field(0.0, ge=0, description="diagnostics: when > 0, every thread's traceback goes to state/stalls.log whenever the event loop stalls this long")


class WebConfig(_Section):
    """The web view served by the service (REST under /api, WebSockets, the page)."""

    enabled: bool = Field(True, description="serve the web view from the service process")
    host: str = Field("127.0.0.1", description="bind address; anything but loopback exposes the page to the network")
    port: int = Field(8765, ge=0, le=65535, description="0 = any free port (it is logged and written to state/health.json)")
    token: str = Field("", description="bearer token for state-changing requests (reprocess); env CONTIMG_WEB_TOKEN wins; empty = refused")
    client_queue: int = Field(100, ge=1, description="events a WebSocket client may fall behind before its oldest are dropped")
    waterfall_bins: int = Field(192, ge=8, le=4096, description="frequency bins of a waterfall row")
    waterfall_history_s: float = Field(3600.0, gt=0, le=86400, description="the waterfall shows this much of the latest data (by the data's own timestamps; at most 64 groups); a page that opens gets it at once")


class SkyConfig(_Section):
    """The sky catalogue: the calibration model's field sources, QA's cross-match, photometry."""

    catalogue: str = Field("", description="catalogue file: CSV (name, ra_deg, dec_deg, flux_jy, spectral_index, ref_freq_hz), FITS table or VOTable (operators-guide: The sky catalogue; tools/nvss_to_catalogue.py converts NVSS), relative to the root unless absolute; empty = the shipped VLA calibrator list")


class QAConfig(_Section):
    """Quality gates per stage (`contimg.qa.gates`), source finding and cross-match, plots."""

    enabled: bool = Field(True, description="run the gates, cross-match and photometry; a failed gate marks the group and alerts, it never discards products")
    min_subband_fraction: float = Field(0.75, ge=0, le=1, description="read: usable subbands / expected at least this")
    max_zero_fraction: float = Field(0.05, ge=0, le=1, description="read: zero or non-finite cross-correlation samples at most this")
    max_flag_fraction: float = Field(0.5, ge=0, le=1, description="flag: flagged cross-correlation samples at most this")
    dead_antenna_fraction: float = Field(0.95, gt=0, le=1, description="an antenna flagged more than this is dead")
    max_dead_antennas: int = Field(10, ge=0, description="flag: dead antennas at most this many")
    min_median_snr: float = Field(10.0, ge=0, description="calibrate: median solution SNR at least this")
    max_solution_flag_fraction: float = Field(0.3, ge=0, le=1, description="calibrate: flagged solutions at most this")
    max_phase_scatter_deg: float = Field(20.0, gt=0, description="calibrate: median scatter of the gain phase across channels about a delay fit")
    max_gain_phase_step_deg: float = Field(30.0, gt=0, description="calibrate: median RMS phase step of the time gains between consecutive solution intervals")
    max_bandpass_roughness: float = Field(0.1, gt=0, description="calibrate: median channel-to-channel amplitude jitter / amplitude")
    solution_aging_hours: float = Field(1.0, ge=0, description="calibrate: the applied solution is fresh up to this age (|group mid - solution mid|), then aging")
    solution_stale_hours: float = Field(6.0, ge=0, description="calibrate: ... stale beyond this (a warning alert stale_calibration)")
    solution_critical_hours: float = Field(24.0, ge=0, description="calibrate: ... critical beyond this, or when nothing is applied (a critical alert; the gate fails)")
    min_dynamic_range: float = Field(20.0, ge=0, description="image: restored peak / robust RMS at least this")
    max_noise_jy: float = Field(1.0, gt=0, description="image: robust RMS of the residual at most this")
    beam_tolerance: float = Field(0.25, gt=0, description="image: fitted beam axes within this fraction of the reference beam")
    reference_beam_arcsec: list[float] = Field(default_factory=list, description="image: expected (bmaj, bmin); empty = the median beam of the last 10 images that passed")
    source_threshold_sigma: float = Field(7.0, gt=0, description="source finding: islands peaking above this many robust RMS")
    max_sources: int = Field(500, ge=1, description="source finding: at most this many islands (brightest first) are fitted")
    min_pb: float = Field(0.3, gt=0, le=1, description="cross-match and photometry only where the averaged primary beam is at least this")
    match_radius_beam: float = Field(1.0, gt=0, description="cross-match radius in beam major axes")
    min_match_snr: float = Field(20.0, ge=0, description="matches this bright (peak / local RMS) enter the flux ratio and offsets")
    min_matches: int = Field(1, ge=0, description="image: at least this many catalogue matches (when the field holds catalogue sources above the detection limit)")
    max_offset_beam: float = Field(0.2, gt=0, description="image: systematic (median vector) position offset at most this many beams")
    max_flux_ratio_error: float = Field(0.1, gt=0, description="image: |median flux ratio - 1| at most this")
    plots: bool = Field(True, description="diagnostic PNGs per group (bandpass, flags, uv coverage) into qa_artifacts")

    @model_validator(mode="after")
    def _staleness_ordered(self) -> "QAConfig":
        if not self.solution_aging_hours <= self.solution_stale_hours <= self.solution_critical_hours:
            raise ValueError("qa.solution_aging_hours <= solution_stale_hours <= solution_critical_hours is required, got "
                             f"{self.solution_aging_hours}, {self.solution_stale_hours}, {self.solution_critical_hours}")
        return self


class PhotometryConfig(_Section):
    """Forced photometry at catalogue positions and the variability statistics."""

    enabled: bool = Field(True, description="measure every catalogue source in each image that passed its gate")
    min_flux_jy: float = Field(0.0, ge=0, description="catalogue sources fainter than this (at the image frequency) are skipped")
    systematic_fraction: float = Field(0.02, ge=0, description="fractional flux-scale error added in quadrature to each measurement's error")
    eta_threshold: float = Field(5.0, gt=0, description="variability: weighted reduced chi-square eta above this ...")
    v_threshold: float = Field(0.1, gt=0, description="... and modulation index V above this make a candidate")
    min_points: int = Field(4, ge=2, description="measurements a source needs before it can be a candidate")


class MosaicConfig(_Section):
    """Strip mosaics of consecutive groups: primary-beam-weighted inverse-variance linear mosaics
    (`contimg.mosaic`), a running one per span updated as each group completes."""

    enabled: bool = Field(True, description="update the running strip mosaic after each group (contimg.pipeline.mosaic.after_group)")
    span_hours: float = Field(1.0, gt=0, le=24, description="one fixed mosaic per this many hours of data (UTC, spans aligned to 00:00); a group goes into the span of its mid-time and into a neighbouring span's grid where its image reaches it")
    cell_arcsec: float | None = Field(None, gt=0, description="mosaic pixel; None = the images' cell")
    pb_cutoff: float = Field(0.2, gt=0, lt=1, description="an image contributes where its averaged primary beam is at least this")
    interpolation: Literal["bilinear", "bicubic"] = Field("bicubic", description="the interpolation of the images onto the mosaic grid (bicubic: cubic B-splines, as reproject's; bilinear loses a few per cent of a point source's peak on a beam of ~3 pixels)")


class CatalogueConfig(_Section):
    """The pipeline's own running catalogue (source finding on every image and mosaic), forced
    photometry of its sources, and transient candidates."""

    enabled: bool = Field(True, description="find sources, update the catalogue and measure its sources after each group")
    detect_sigma: float = Field(7.0, gt=0, description="islands above this many local robust RMS become detections")
    min_pb: float = Field(0.2, gt=0, le=1, description="detection and forced photometry only where the averaged primary beam (a mosaic's pb weight) is at least this")
    match_radius_beam: float = Field(1.0, gt=0, description="a detection within this many restoring-beam major axes of a catalogue source is that source")
    max_sources: int = Field(2000, ge=1, description="at most this many islands (brightest first) per image")
    systematic_fraction: float = Field(0.02, ge=0, description="fractional flux-scale error added in quadrature to each forced measurement's error")
    eta_threshold: float = Field(5.0, gt=0, description="variability candidates: eta above this ...")
    v_threshold: float = Field(0.1, gt=0, description="... and V above this, with at least min_points measurements")
    min_points: int = Field(3, ge=2, description="forced measurements a source needs before it can be a variability candidate")
    transient_sigma: float = Field(8.0, gt=0, description="transient candidates: detections above this many local RMS with no catalogue counterpart ...")
    transient_rise_sigma: float = Field(5.0, gt=0, description="... whose flux exceeds the forced flux at that position in every earlier image of the same sky by this many combined sigma")
    cutout_arcmin: float = Field(20.0, gt=0, description="side of a transient candidate's cut-out PNG")
    external: str = Field("", description="an external catalogue (CSV/FITS/VOTable, contimg.sky.catalogue) to cross-match the catalogue's sources with; empty = sky.catalogue when set")


class AlertsConfig(_Section):
    """Alerts: severities info/warning/critical, to the log, the status bus and a webhook."""

    webhook_url: str = Field("", description="POST a Slack-compatible JSON body here (env CONTIMG_ALERT_WEBHOOK wins); empty = none")
    webhook_min_severity: Literal["info", "warning", "critical"] = Field("warning", description="alerts below this are not posted")
    max_per_category: int = Field(10, ge=1, description="at most this many alerts of one category per window; the rest are counted, not sent")
    window_s: float = Field(300.0, gt=0, description="the rate-limit window")
    dedup_s: float = Field(300.0, ge=0, description="the same alert (category and key) is sent once in this long")
    queue_depth_warning: int = Field(12, ge=1, description="pending groups above this raise a queue-depth alert")


class ClusterConfig(_Section):
    """Reprocessing on a Dask cluster (`contimg run --cluster ADDRESS` or `--workers N`)."""

    worker_resources: dict[str, float] = Field(default_factory=dict, description="resources each group's task needs, e.g. {GPU = 1}; workers advertise them (dask worker --resources GPU=1)")
    allowed_failures: int = Field(3, ge=0, description="times a group's task may lose its worker before the group fails (then retried per service.max_retries)")
    connect_timeout_s: float = Field(60.0, gt=0, description="wait this long for the first worker")


class InteropConfig(_Section):
    """Exports for other tools (`contimg export-ms`)."""

    ms_phasing: Literal["midtime", "per_integration"] = Field("midtime", description="MS fields: one at the meridian at mid-group (what contimg images), or one per integration at its meridian")


class GenericConfig(_Section):
    """`contimg run FILE`: one UVH5/UVFITS/MS file of any array (`contimg.pipeline.generic`)."""

    max_scan_gap_s: float = Field(300.0, gt=0, description="a new scan at a field change or a gap longer than this")
    gain_channel_fraction: float = Field(0.8, gt=0, le=1, description="per-scan gains: data averaged over this central fraction of the channels (bandpass divided out)")
    min_snr_bandpass: float = Field(3.0, ge=0, description="bandpass solutions with a lower SNR are flagged")
    min_snr_gain: float = Field(3.0, ge=0, description="per-scan gain solutions with a lower SNR are flagged")
    cell_arcsec: float | None = Field(None, gt=0, description="image cell; None = a quarter of the synthesized beam (shortest wavelength / longest baseline)")
    npix: int | None = Field(None, ge=64, description="image size; None = twice the primary beam's FWHM (from the file's dish diameter) over the cell, at most image.npix")
    refant: str | None = Field(None, description="reference antenna (the file's name for it, e.g. 'VLA:N2'); None = calibrate.refant or its fallbacks if the file has one, else the antenna with the most unflagged data")
    continuum_channels: list[tuple[int, int]] | None = Field(None, description="line-free channels imaged: [first, last] pairs, inclusive, numbered from 0 in the file's order (CASA's), e.g. [[0, 5], [50, 62]]; None = all. Calibration solves use all channels")

    @model_validator(mode="after")
    def _channel_ranges(self) -> "GenericConfig":
        ranges = self.continuum_channels
        if ranges is not None and (not ranges or not all(0 <= a <= b for a, b in ranges)):
            raise ValueError("generic.continuum_channels: [first, last] pairs with 0 <= first <= last, at least one, "
                             f"got {[list(r) for r in ranges]}")
        return self


class Config(_Section):
    name: str = "custom"
    simulate: SimulateConfig = SimulateConfig()
    grouping: GroupingConfig = GroupingConfig()
    flag: FlagConfig = FlagConfig()
    calibrate: CalibrateConfig = CalibrateConfig()
    image: ImageConfig = ImageConfig()
    astropy: AstropyConfig = AstropyConfig()
    runtime: RuntimeConfig = RuntimeConfig()
    service: ServiceConfig = ServiceConfig()
    web: WebConfig = WebConfig()
    sky: SkyConfig = SkyConfig()
    qa: QAConfig = QAConfig()
    photometry: PhotometryConfig = PhotometryConfig()
    mosaic: MosaicConfig = MosaicConfig()
    catalogue: CatalogueConfig = CatalogueConfig()
    alerts: AlertsConfig = AlertsConfig()
    cluster: ClusterConfig = ClusterConfig()
    interop: InteropConfig = InteropConfig()
    generic: GenericConfig = GenericConfig()


def packaged_config_names() -> list[str]:
    """Names of the configs shipped with the package (``dsa110``, ``quick``, ``test``)."""
    folder = resources.files("contimg") / "configs"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".toml"))


def _locate(name_or_path: str | Path, *, relative_to: Path | None = None) -> tuple[str, str, Path | None]:
    """(text, where, folder) of a config given by packaged name (``test``) or TOML path.

    A bare packaged name is the packaged config. A path is tried relative to ``relative_to``
    (the folder of the config naming it as ``base``), then as given (relative to the current
    folder, or absolute). A relative path that is not there but names a packaged config in a
    ``configs`` folder or none (``configs/test.toml``, ``test.toml``) is the packaged one.
    ``folder``: where the file lies (None for a packaged config)."""
    names = packaged_config_names()
    path = Path(name_or_path).expanduser()
    bare = len(path.parts) == 1 and path.suffix != ".toml"
    if bare and str(path) in names:
        return _packaged(str(path)), f"configs/{path}.toml", None
    tried = []
    for candidate in ([relative_to / path] if relative_to is not None and not path.is_absolute() else []) + [path]:
        if candidate.is_file():
            return candidate.read_text(), str(candidate), candidate.parent
        tried.append(str(candidate.absolute()))
    if (not path.is_absolute() and path.suffix == ".toml" and path.stem in names
            and path.parent.name in ("", "configs")):
        return _packaged(path.stem), f"configs/{path.stem}.toml (packaged)", None
    raise ConfigError(f"no config {str(name_or_path)!r}: no file {' nor '.join(dict.fromkeys(tried))}, and not one of "
                      f"the packaged configs ({', '.join(names)})")


def _packaged(name: str) -> str:
    return (resources.files("contimg") / "configs" / f"{name}.toml").read_text()


def _read_toml(name_or_path: str | Path, *, relative_to: Path | None = None) -> tuple[dict, str, Path | None]:
    text, where, folder = _locate(name_or_path, relative_to=relative_to)
    try:
        return tomllib.loads(text), where, folder
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where}: not valid TOML: {exc}") from exc


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for key, val in over.items():
        if isinstance(val, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], val)
        else:
            out[key] = val
    return out


def _resolve(name_or_path: str | Path, seen: tuple = (), *, relative_to: Path | None = None) -> tuple[dict, str]:
    raw, where, folder = _read_toml(name_or_path, relative_to=relative_to)
    base = raw.pop("base", None)
    if base is not None:
        if base in seen:
            raise ConfigError(f"{where}: 'base' chain loops through {base!r}")
        base_raw, _ = _resolve(base, seen + (str(name_or_path),), relative_to=folder)
        raw = _merge(base_raw, raw)
    return raw, where


def _env_overrides(prefix: str = "CONTIMG__") -> tuple[dict, dict[tuple[str, ...], str]]:
    """(the overrides as nested tables, key path → ``NAME=value`` of the variable that set it)."""
    out: dict = {}
    names: dict[tuple[str, ...], str] = {}
    for key, val in os.environ.items():
        if not key.startswith(prefix):
            continue
        parts = [p.lower() for p in key[len(prefix):].split("__")]
        try:
            parsed = tomllib.loads(f"v = {val}")["v"]
        except tomllib.TOMLDecodeError:
            parsed = val
        node = out
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = parsed
        names[tuple(parts)] = f"{key}={val}"
    return out, names


def _validate(raw: dict, *, where: str, use_env: bool, overrides: dict | None = None) -> Config:
    """``raw`` with the environment's and ``overrides``' values merged in, validated; a refused
    value is blamed on the environment variable that set it, else on ``where``."""
    env, env_names = _env_overrides() if use_env else ({}, {})
    raw = _merge(raw, env)
    if overrides:
        raw = _merge(raw, overrides)
    try:
        return Config.model_validate(raw)
    except ValidationError as exc:
        by_source: dict[str, list[str]] = {}
        for err in exc.errors():
            loc = tuple(str(p) for p in err["loc"])
            set_by = [name for path, name in env_names.items() if loc[:len(path)] == path]
            inside = [name for path, name in env_names.items() if len(path) > len(loc) and path[:len(loc)] == loc]
            source = set_by[0] if set_by else where + (f" with {', '.join(inside)}" if inside else "")
            by_source.setdefault(source, []).append(f"{'.'.join(loc)}: {err['msg']}")
        raise ConfigError("; ".join(f"{source}: {'; '.join(problems)}"
                                    for source, problems in by_source.items())) from None


def load_config(name_or_path: str | Path = "dsa110", *, overrides: dict | None = None, use_env: bool = True) -> Config:
    """Load a packaged config by name or a TOML file by path into a validated `Config`.

    Raises `ConfigError` naming the file (or the environment variable) and the offending key for
    unknown keys or bad values, and what was tried when no config of that name or path exists.
    """
    raw, where = _resolve(name_or_path)
    return _validate(raw, where=where, use_env=use_env, overrides=overrides)


def config_from_dict(raw: dict, *, where: str, use_env: bool = True) -> Config:
    """A `Config` from its dumped form (``Config.model_dump(mode="json")``, e.g. one stored with a
    root), with the environment's overrides applied; a refused value names ``where``."""
    return _validate(dict(raw), where=where, use_env=use_env)
