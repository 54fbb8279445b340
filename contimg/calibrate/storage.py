"""Gain solutions as Zarr groups (`contimg.io.store`): the bandpass (`GainSolution`) and the
time-dependent gains (`TimeGains`), with their metadata as attributes."""

from __future__ import annotations

from pathlib import Path

from contimg.calibrate.solution import GainSolution, TimeGains
from contimg.io.store import read_zarr, write_zarr

__all__ = ["save_solution", "load_solution", "save_time_gains", "load_time_gains"]


def save_solution(path: Path, sol: GainSolution) -> Path:
    return write_zarr(path, arrays={"antenna_numbers": sol.antenna_numbers, "freq_hz": sol.freq_hz,
                                    "gains": sol.gains, "flags": sol.flags, "snr": sol.snr},
                      attrs={"refant": sol.refant, "mid_jd": sol.mid_jd, "calibrator": sol.calibrator,
                             "group_id": sol.group_id, "iterations": sol.iterations, **sol.meta})


def load_solution(path: Path) -> GainSolution:
    arrays, attrs = read_zarr(path)
    meta = {k: v for k, v in attrs.items() if k not in ("refant", "mid_jd", "calibrator", "group_id", "iterations")}
    return GainSolution(arrays["antenna_numbers"], arrays["freq_hz"], arrays["gains"], arrays["flags"],
                        arrays["snr"], attrs["refant"], attrs["mid_jd"], attrs["calibrator"], attrs["group_id"],
                        attrs.get("iterations", 0), meta)


def save_time_gains(path: Path, tg: TimeGains) -> Path:
    return write_zarr(path, arrays={"antenna_numbers": tg.antenna_numbers, "time_jd": tg.time_jd, "gains": tg.gains,
                                    "flags": tg.flags, "snr": tg.snr},
                      attrs={"refant": tg.refant, "calibrator": tg.calibrator, "group_id": tg.group_id,
                             "calmode": tg.calmode, "interval_s": tg.interval_s, "iterations": tg.iterations,
                             "cal_type": "gains", **tg.meta})


def load_time_gains(path: Path) -> TimeGains:
    arrays, attrs = read_zarr(path)
    keys = ("refant", "calibrator", "group_id", "calmode", "interval_s", "iterations", "cal_type")
    return TimeGains(arrays["antenna_numbers"], arrays["time_jd"], arrays["gains"], arrays["flags"], arrays["snr"],
                     attrs["refant"], attrs["calibrator"], attrs["group_id"], attrs["calmode"],
                     float(attrs["interval_s"]), int(attrs.get("iterations", 0)),
                     {k: v for k, v in attrs.items() if k not in keys})
