"""A real-size group (96 antennas, 768 channels, 24 integrations, 3C286 transiting) through the
full-mode pipeline: every source above 10 sigma within 0.2 beam and 5 % of its truth flux.
Slow (~3 min on 2 cores, 2.3 GB on disk): run with ``python -m pytest -m slow``."""

import pytest


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_real_size_group_recovers_every_source(tmp_path):
    from contimg.config import load_config
    from contimg.service.batch import run_batch
    from contimg.sim import simulate
    from contimg.sim.truthcheck import measure_truth_sources

    cfg = load_config("dsa110", use_env=False)
    simulate(tmp_path / "in", n_groups=1, cfg=cfg.simulate)
    results, code = run_batch(tmp_path / "in", root=tmp_path / "root", cfg=cfg)
    assert code == 0, results[0].error
    gid = results[0].group_id
    rows, _ = measure_truth_sources(products_dir=tmp_path / "root" / "products" / gid, group_id=gid,
                                    truth_path=tmp_path / "in" / "truth.h5")
    assert len(rows) >= 20
    bad = [r for r in rows if r["offset_beam"] >= 0.2 or abs(r["ratio"] - 1) >= 0.05]
    assert not bad, bad
