"""A processed group gathered for export: its raw files re-read, its stored flags and gains
applied (`stored_group`), written as a Measurement Set (`export_ms`) or UVFITS/UVH5
(`export_calibrated`) by `contimg.interop.ms`."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from contimg.calibrate import apply_gains
from contimg.interop.ms import write_calibrated, write_ms
from contimg.io.chunk import VisChunk
from contimg.io.store import read_zarr
from contimg.pipeline.stages import GroupWork, run_stage, usable_checkpoint
from contimg.sky.catalogue import load_catalogue, resolve_catalogue, sources_near
from contimg.sky.geometry import hadec_to_icrs
from contimg.sky.skymodel import sky_visibilities
from contimg.state.ingest import IngestDB

__all__ = ["stored_group", "export_ms", "export_calibrated"]


def stored_group(group_id: str, *, root: Path, cfg) -> tuple[VisChunk, np.ndarray]:
    """A processed group's data as contimg used it: its raw files re-read, its stored flags
    (``flags.zarr``) and gains (``cal.zarr``) applied. Returns (chunk with the raw visibilities
    and the final flags, the calibrated visibilities (raw where no gains were applied))."""
    root = Path(root)
    db = IngestDB(root / "state" / "ingest.sqlite3", n_subbands=cfg.grouping.n_subbands,
                  tolerance_s=cfg.grouping.group_tolerance_s)
    try:
        if db.row(group_id) is None:
            raise FileNotFoundError(f"{root}: no group {group_id} in its ingest database")
        group = db.group(group_id)
    finally:
        db.close()
    work = GroupWork(group=group, root=root)
    work.checkpoint = usable_checkpoint(work.out_dir, "flag")
    if work.checkpoint != "flag":
        raise FileNotFoundError(f"{work.out_dir / 'flags.zarr'}: group {group_id} has no stored flags; "
                                "process it first (contimg run / reprocess)")
    qa_off = cfg.model_validate({**cfg.model_dump(), "qa": {**cfg.qa.model_dump(), "enabled": False}})
    run_stage("read", work, qa_off)
    run_stage("flag", work, qa_off)
    chunk = work.chunk
    corrected = chunk.vis.copy()
    cal_path = work.out_dir / "cal.zarr"
    if cal_path.is_dir():
        arrays, attrs = read_zarr(cal_path)
        if attrs.get("applied"):
            flags = chunk.flags.copy()
            apply_gains(vis=corrected, flags=flags, ant1=chunk.ant1, ant2=chunk.ant2,
                        antenna_numbers=arrays["antenna_numbers"], gains=arrays["gains"], gain_flags=arrays["flags"],
                        time_gains=arrays.get("time_gains"), time_gain_flags=arrays.get("time_gain_flags"))
            chunk.flags = flags
    return chunk, corrected


def export_ms(group_id: str, *, root: Path, out: Path, cfg, phasing: str | None = None) -> Path:
    """The group ``group_id`` of ``root`` as an MS (`stored_group` for DATA, FLAG and
    CORRECTED_DATA; the sky catalogue predicted for MODEL_DATA)."""
    chunk, corrected = stored_group(group_id, root=root, cfg=cfg)
    catalogue = load_catalogue(resolve_catalogue(cfg.sky.catalogue, Path(root)))
    ra_c, dec_c = hadec_to_icrs(ha_rad=0.0, dec_rad=chunk.pointing_dec_rad, time_jd=float(np.mean(chunk.time_jd)))
    field = sources_near(catalogue, ra_rad=ra_c, dec_rad=dec_c, radius_deg=cfg.calibrate.model_radius_deg,
                         min_flux_jy=0.0)
    b_enu = chunk.antenna_enu_m[chunk.ant2] - chunk.antenna_enu_m[chunk.ant1]
    sky = sky_visibilities(sources=field, time_jd=chunk.time_jd, freq_hz=chunk.freq_hz, b_enu_m=b_enu,
                           pointing_dec_rad=chunk.pointing_dec_rad) if len(field) else None
    model = np.zeros_like(chunk.vis)
    if sky is not None:
        model[...] = sky[..., None]
    return write_ms(out, chunk=chunk, corrected=corrected, model=model, phasing=phasing or cfg.interop.ms_phasing)


def export_calibrated(group_id: str, *, root: Path, out: Path, cfg) -> Path:
    """The group's calibrated visibilities (`stored_group`) as UVFITS (``.uvfits``) or UVH5
    (``.uvh5``) (`contimg.interop.ms.write_calibrated`)."""
    out = Path(out)
    if out.suffix not in (".uvfits", ".uvh5"):
        raise ValueError(f"{out}: the name must end in .uvfits or .uvh5")
    chunk, corrected = stored_group(group_id, root=root, cfg=cfg)
    return write_calibrated(out, chunk=chunk, corrected=corrected)
