"""The sample images the health checks import (tests/*.tif): exactly what
scripts/make-sample-images.py writes, and real baseline TIFFs an independent
reader (Pillow) opens with the intended pixels."""

from __future__ import annotations

import runpy
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from omero_adi.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "make-sample-images.py"
GENERATOR: dict[str, Any] = runpy.run_path(str(SCRIPT))
SAMPLES = {sample.name: sample for sample in GENERATOR["SAMPLES"]}
#: TIFF 6.0 baseline: size, bits, compression, photometric, strips, resolution.
BASELINE_TAGS = {256, 257, 258, 259, 262, 273, 277, 278, 279, 282, 283, 296}


def test_the_default_sample_is_one_of_them() -> None:
    assert Path(Settings().sample_image).name in SAMPLES
    assert {p.name for p in (ROOT / "tests").glob("*.tif")} == set(SAMPLES)


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_committed_file_is_the_scripts_output(name: str) -> None:
    committed = (ROOT / "tests" / name).read_bytes()
    assert committed == GENERATOR["render"](SAMPLES[name])
    assert len(committed) < 8_000  # small enough to ship in the image


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_an_independent_reader_sees_the_intended_pixels(name: str) -> None:
    sample = SAMPLES[name]
    with Image.open(ROOT / "tests" / name) as image:
        assert image.format == "TIFF"
        assert BASELINE_TAGS <= set(image.tag_v2)
        assert image.tag_v2[259] == 1  # uncompressed
        assert image.size == (sample.width, sample.height)
        assert image.mode == ("RGB" if sample.rgb else "L" if sample.bits == 8 else "I;16")
        pixels = np.array(image)
    expected = np.array([[sample.pixel(x, y) for x in range(sample.width)]
                         for y in range(sample.height)])
    if not sample.rgb:
        expected = expected[..., 0]
    assert np.array_equal(pixels, expected)
    assert len(np.unique(pixels)) > 8  # an image, not a flat field


def test_check_mode_finds_a_stale_file(tmp_path: Path) -> None:
    def check() -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, str(SCRIPT), "--check", "--dir", str(tmp_path)],
                              capture_output=True, text=True, timeout=60)

    written = subprocess.run([sys.executable, str(SCRIPT), "--dir", str(tmp_path)],
                             capture_output=True, text=True, timeout=60)
    assert written.returncode == 0, written.stderr
    assert check().returncode == 0
    (tmp_path / "Barbie16.tif").write_bytes(b"II*\0")
    stale = check()
    assert stale.returncode == 1 and "Barbie16.tif" in stale.stderr
