"""The h5py reader against pyuvdata, and bad input."""

import logging

import numpy as np
import pytest

from contimg.io.naming import group_files, parse_subband_name, scan_folder
from contimg.io.reader import ReadError, read_group


def _group(folder):
    return group_files(scan_folder(folder), tolerance_s=60)[0]


def _pyuvdata_group(files: dict, name: str) -> np.ndarray:
    """pyuvdata's array ``name`` (flag_array, nsample_array) of the 16 subband files, each in
    ascending frequency, concatenated as the reader's (ntime, nbl, nchan, 2)."""
    from pyuvdata import UVData

    planes = []
    for sb in range(15, -1, -1):  # sb15 is the lowest subband
        uv = UVData()
        uv.read(files[sb], file_type="uvh5", run_check=False, strict_uvw_antpos_check=False)
        order = np.argsort(uv.freq_array)
        planes.append(getattr(uv, name)[:, order].reshape(uv.Ntimes, uv.Nbls, -1, 2))
    return np.concatenate(planes, axis=2)


def test_reader_equals_pyuvdata(sim_dir):
    """pyuvdata reads each subband (it refuses the 16 at once because of the float32 uvw); we
    concatenate its arrays in ascending frequency and compare with ours."""
    from pyuvdata import UVData

    group = _group(sim_dir)
    chunk = read_group(group)
    vis, flags, nsamp, freqs = [], [], [], []
    for sb in range(15, -1, -1):  # sb15 is the lowest subband
        uv = UVData()
        uv.read(group.files[sb], file_type="uvh5", run_check=False, strict_uvw_antpos_check=False)
        order = np.argsort(uv.freq_array)
        ntime, nbl = uv.Ntimes, uv.Nbls
        vis.append(uv.data_array[:, order].reshape(ntime, nbl, -1, 2))
        flags.append(uv.flag_array[:, order].reshape(ntime, nbl, -1, 2))
        nsamp.append(uv.nsample_array[:, order].reshape(ntime, nbl, -1, 2))
        freqs.append(uv.freq_array[order])
        if sb == 0:
            uvw = uv.uvw_array.astype(np.float64).reshape(ntime, nbl, 3)
            times = np.unique(uv.time_array)
            a1, a2 = uv.ant_1_array[:nbl], uv.ant_2_array[:nbl]
    assert np.array_equal(chunk.vis, np.concatenate(vis, axis=2))
    assert np.array_equal(chunk.flags, np.concatenate(flags, axis=2))
    assert np.array_equal(chunk.weights, np.concatenate(nsamp, axis=2))
    assert np.array_equal(chunk.freq_hz, np.concatenate(freqs))
    assert np.array_equal(chunk.uvw_m, uvw) and chunk.uvw_m.dtype == np.float64
    assert np.allclose(chunk.time_jd, times, rtol=0, atol=1e-9)
    assert np.array_equal(chunk.ant1, a1) and np.array_equal(chunk.ant2, a2)
    assert chunk.subbands_present.all() and not chunk.problems


def test_uniform_weights_take_no_memory_and_a_missing_subband_weighs_zero(copy_group):
    """The correlator's nsamples are one value throughout: the chunk's weights are a broadcast
    view of one value per channel (no (ntime, nbl, nchan, npol) array), 0 on a missing subband."""
    folder, files = copy_group
    files[3].unlink()
    chunk = read_group(_group(folder))
    assert 0 in chunk.weights.strides[:2] and not chunk.weights.flags.writeable
    nch = chunk.freq_hz.size // 16
    lo = chunk.freq_hz.size - 4 * nch  # sb03's channels in ascending order
    assert not chunk.weights[:, :, lo:lo + nch].any()
    assert (chunk.weights[:, :, :lo] == 1).all() and (chunk.weights[:, :, lo + nch:] == 1).all()


def test_nonuniform_weights_equal_pyuvdata(copy_group):
    """One subband whose nsamples vary (one integration's halved, one sample zeroed): the full
    weights array, equal to pyuvdata's nsample_array of each file, the other subbands' too."""
    import h5py

    folder, files = copy_group
    with h5py.File(files[9], "r+") as f:
        ns = f["Data/nsamples"][()]
        nbl = ns.shape[0] // int(f["Header/Ntimes"][()])
        ns[2 * nbl:3 * nbl] *= 0.5
        ns[5, 0, 3, 1] = 0.0
        f["Data/nsamples"][...] = ns
    chunk = read_group(_group(folder))
    assert 0 not in chunk.weights.strides
    assert np.array_equal(chunk.weights, _pyuvdata_group(files, "nsample_array"))
    assert (chunk.weights == 0.5).any() and (chunk.weights == 0).sum() == 1


def test_flags_in_files_equal_pyuvdata_and_the_vis_go_where_asked(copy_group):
    """Files that flag samples (one integration of one subband, three samples of another; the
    rest flag nothing): the group's flags equal pyuvdata's flag_array of each file, and the
    visibilities are made by ``vis_empty`` (the stages pass pinned host memory for a device)."""
    import h5py

    folder, files = copy_group
    for sb in (4, 11):
        with h5py.File(files[sb], "r+") as f:
            fl = f["Data/flags"][()]
            plane = fl.reshape(fl.shape[0], -1, fl.shape[-1])  # (blt, chan, pol) whatever the spw axis
            nbl = fl.shape[0] // int(f["Header/Ntimes"][()])
            if sb == 4:
                plane[2 * nbl:3 * nbl, 1:3] = True  # one integration, two channels, both polarizations
            else:
                plane[[3, 7, 8], [0, 2, 3], 1] = True
            f["Data/flags"][...] = fl
    made = []

    def vis_empty(shape, dtype):
        made.append((shape, np.dtype(dtype)))
        return _garbage(shape, dtype)

    chunk = read_group(_group(folder), vis_empty=vis_empty)
    assert made == [(chunk.vis.shape, np.dtype(np.complex64))]
    assert np.array_equal(chunk.flags, _pyuvdata_group(files, "flag_array"))
    assert chunk.flags.sum() == chunk.vis.shape[1] * 2 * 2 + 3


def test_incomplete_files_are_not_subband_files(tmp_path):
    assert parse_subband_name(tmp_path / "2026-01-01T00:00:00_sb03_incomplete.hdf5") is None
    assert parse_subband_name(tmp_path / "2026-01-01T00:00:00_sb03.hdf5").subband == 3


def _garbage(shape, dtype):
    """An allocation whose contents are not zero (as np.empty's may not be): the reader must
    write or zero every channel."""
    return np.full(shape, 3 - 4j, dtype)


def test_missing_subband_is_flagged_and_named(copy_group):
    """sb07 missing: flagged, named, and its visibilities zero in an array that was not."""
    folder, files = copy_group
    files[7].unlink()
    chunk = read_group(_group(folder), vis_empty=_garbage)
    assert not chunk.subbands_present[7] and chunk.subbands_present.sum() == 15
    assert any("sb07 is missing" in p for p in chunk.problems)
    nch = chunk.freq_hz.size // 16
    lo = chunk.freq_hz.size - 8 * nch  # sb07's channels in ascending order
    assert chunk.flags[:, :, lo:lo + nch].all() and not chunk.vis[:, :, lo:lo + nch].any()
    assert not chunk.flags[:, chunk.cross, lo + nch:].all()
    assert np.all(np.diff(chunk.freq_hz) > 0)  # frequencies are still complete and ascending
    with pytest.raises(ReadError, match=r"1 of 16 subbands missing \(sb07\)"):
        read_group(_group(folder), on_bad_subband="fail")


def _reader_warnings(caplog):
    return [r.getMessage() for r in caplog.records if r.name == "contimg.io.reader" and r.levelno >= logging.WARNING]


def test_random_bytes_file_is_reported_once_with_the_missing_count(copy_group, caplog):
    """One garbage subband file among missing ones: one line for the group, naming the file and
    counting the missing subbands, not one line per missing subband."""
    folder, files = copy_group
    for sb in range(8, 16):  # sb08..sb15 missing, sb03 random bytes, the other seven good
        files[sb].unlink()
    files[3].write_bytes(np.random.default_rng(1).bytes(4096))
    caplog.set_level(logging.WARNING, logger="contimg.io.reader")
    chunk = read_group(_group(folder))
    assert chunk.subbands_present.sum() == 7 and not chunk.subbands_present[3]
    assert len(chunk.problems) == 9  # the chunk still keeps one reason per subband
    warnings = _reader_warnings(caplog)
    assert len(warnings) == 1, warnings
    msg = warnings[0]
    assert msg.startswith(f"group {chunk.group_id}: 1 unreadable subband file ({files[3]}: cannot read the header")
    assert "8 of 16 subbands missing (sb08-sb15)" in msg and msg.endswith("(flagged)")
    assert "is missing" not in msg and msg.count(str(files[3])) == 1

    # the same group with only the garbage file left: the error is one short line too
    for sb in (0, 1, 2, 4, 5, 6, 7):
        files[sb].unlink()
    caplog.clear()
    group = _group(folder)
    with pytest.raises(ReadError) as info:
        read_group(group)
    text = str(info.value)
    assert text.startswith(f"group {group.group_id}: no readable subband file: 1 unreadable subband file ({files[3]}")
    assert text.endswith("15 of 16 subbands missing (sb00-sb02, sb04-sb15)")
    assert text.count("group ") == 1 and text.count(str(files[3])) == 1
    assert not _reader_warnings(caplog)


def test_truncated_file_is_named(copy_group):
    folder, files = copy_group
    data = files[3].read_bytes()
    files[3].write_bytes(data[: len(data) // 2])
    chunk = read_group(_group(folder), vis_empty=_garbage)
    assert not chunk.subbands_present[3]
    nch = chunk.freq_hz.size // 16
    lo = chunk.freq_hz.size - 4 * nch  # sb03's channels in ascending order
    assert not chunk.vis[:, :, lo:lo + nch].any() and chunk.flags[:, :, lo:lo + nch].all()
    assert not (chunk.vis == 3 - 4j).any()  # every other channel was read
    assert any(str(files[3]) in p for p in chunk.problems)
    with pytest.raises(ReadError, match=files[3].name):
        read_group(_group(folder), on_bad_subband="fail")


def test_wrong_channel_count_is_named(copy_group):
    import h5py

    folder, files = copy_group
    with h5py.File(files[5], "r+") as f:  # rewrite sb05 with one channel fewer
        h, d = f["Header"], f["Data"]
        n = int(h["Nfreqs"][()])
        freq = h["freq_array"][()][:, : n - 1]
        for name in ("freq_array", "Nfreqs"):
            del h[name]
        h["freq_array"], h["Nfreqs"] = freq, n - 1
        for name in ("visdata", "flags", "nsamples"):
            arr = d[name][()][:, :, : n - 1]
            del d[name]
            d[name] = arr
    chunk = read_group(_group(folder))
    assert not chunk.subbands_present[5]
    msg = [p for p in chunk.problems if files[5].name in p]
    assert msg and f"has {n - 1} channels" in msg[0]
    with pytest.raises(ReadError, match=f"{files[5].name}.*{n - 1} channels"):
        read_group(_group(folder), on_bad_subband="fail")


def test_too_few_subbands_fails(copy_group):
    folder, files = copy_group
    for sb in range(9):
        files[sb].unlink()
    with pytest.raises(ReadError, match="only 7 usable subbands"):
        read_group(_group(folder), min_subbands=8)


def test_chunk_check_names_the_mismatch(sim_dir):
    from contimg.io.chunk import ChunkShapeError

    chunk = read_group(_group(sim_dir))
    chunk.check()
    chunk.weights = chunk.weights[:, :, :-1]
    with pytest.raises(ChunkShapeError, match=r"weights has shape .* expected"):
        chunk.check()
    chunk = read_group(_group(sim_dir))
    chunk.uvw_m = chunk.uvw_m.astype(np.float32)
    with pytest.raises(ChunkShapeError, match="uvw_m has dtype float32"):
        chunk.check()
