"""outputs.format_metric: enough digits to compare the values people compare, in every table."""

from __future__ import annotations

import pytest

from layersearch.trial.metric_registry import format_metric, format_table


@pytest.mark.parametrize("name, value, text", [
    ("psnr_y", 30.0, "30.00"), ("psnr_y", 30.0912, "30.09"), ("feature psnr_y", 18.5, "18.50"),
    ("lpips", 0.0085123, "0.008512"), ("lpips", 0.3, "0.3000"), ("content_lpips", 0.12345, "0.1235"),
    ("ssim_y", 0.81234, "0.8123"), ("style_distance", 0.0012345, "0.001234"), ("my_metric", 12345.6, "1.235e+04"),
    ("lpips", None, "n/a"), ("psnr_y", float("inf"), "inf"),
])
def test_format_metric(name, value, text):
    assert format_metric(name, value) == text


def test_differences_carry_a_sign_and_show_what_seed_noise_moves():
    # The case: LPIPS -0.00016 between two configs and PSNR 30 vs 30.09 must not round away.
    assert format_metric("lpips", -0.00016, signed=True) == "-0.0001600"
    assert format_metric("psnr_y", 0.09, signed=True) == "+0.09"
    assert format_metric("lpips", 0.0075) != format_metric("lpips", 0.0072)


def test_format_table_formats_each_column_by_its_metric():
    text = format_table({"trained": {"lpips": 0.0085, "psnr_y": 30.0}, "bicubic": {"psnr_y": 28.123}},
                        ["lpips", "psnr_y"])
    lines = text.splitlines()
    assert lines[1].split() == ["trained", "0.008500", "30.00"]
    assert lines[2].split() == ["bicubic", "-", "28.12"]
