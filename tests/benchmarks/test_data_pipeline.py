"""The data-pipeline benchmark measures the bundle's own chains (train.json, with and without cpu_small.json)."""

from __future__ import annotations

import pytest

from benchmarks import data


@pytest.mark.usefixtures("single_thread")
def test_gpu_loader_rates_read_the_published_configuration() -> None:
    rates = data.gpu_loader_rates(cases=4, shape=[40, 40, 32], epochs=2)

    assert rates["crop"] == [80, 160, 160] and rates["batch"] == 2 and rates["workers"] == 4
    assert 0.0 < rates["cached_s"] and 0.0 < rates["uncached_s"]
    low, high = sorted((rates["cached_s"], rates["uncached_s"]))
    assert low <= rates["configured_s"] <= high


@pytest.mark.usefixtures("single_thread")
def test_pipeline_table_ends_with_the_configured_loader() -> None:
    rows = data.pipeline_table(cases=4, shape=[40, 40, 32], epochs=2)

    assert rows[-1]["dataset"].startswith("bundle: CacheDataset (cache_rate 1.0)")
    assert all(0.0 <= row["wait_fraction"] <= 1.0 and row["cases_per_s"] > 0 for row in rows)
