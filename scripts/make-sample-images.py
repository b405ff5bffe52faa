#!/usr/bin/env python3
"""Write the health checks' sample images: small baseline TIFFs of our own making.

    python scripts/make-sample-images.py          # (re)write tests/*.tif
    python scripts/make-sample-images.py --check  # exit 1 when a file differs
    (--dir DIR: another folder than tests/)

``sample_image`` defaults to ``/auto-importer/tests/Barbie.tif`` (the earlier
image's name); the image copies ``tests/*.tif`` there. Each file is one
uncompressed strip with the TIFF 6.0 baseline tags (size, bits, photometric,
strip, resolution), little-endian, so Bio-Formats (and any TIFF reader) opens
it. The pixels are computed, so the output is the same byte for byte on every
run; tests/test_samples.py checks that the committed files are this output.
"""

from __future__ import annotations

import struct
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

TARGET = Path(__file__).resolve().parents[1] / "tests"

# TIFF field types
SHORT, LONG, RATIONAL, ASCII = 3, 4, 5, 2
TYPE_SIZE = {ASCII: 1, SHORT: 2, LONG: 4, RATIONAL: 8}


@dataclass(frozen=True)
class Sample:
    name: str
    width: int
    height: int
    bits: int  # per sample: 8 or 16
    rgb: bool
    description: str
    pixel: Callable[[int, int], tuple[int, ...]]  # (x, y) -> one value per sample


def _rings(x: int, y: int, size: int, top: int) -> int:
    """Concentric rings on a diagonal gradient, 0..top."""
    dx, dy = 2 * x - size, 2 * y - size
    ring = ((dx * dx + dy * dy) // (size // 2)) % 8
    return (ring * top // 7 + (x + y) * top // (4 * size)) % (top + 1)


SAMPLES = (
    Sample("Barbie.tif", 48, 48, 8, False, "omero-adi sample: 8-bit grey rings",
           lambda x, y: (_rings(x, y, 48, 255),)),
    Sample("Barbie16.tif", 32, 24, 16, False, "omero-adi sample: 16-bit grey rings",
           lambda x, y: (_rings(x, y, 32, 4095) * 16,)),
    Sample("BarbieRGB.tif", 32, 32, 8, True, "omero-adi sample: 8-bit RGB",
           lambda x, y: (x * 8, y * 8, _rings(x, y, 32, 255))),
)


def _pixels(sample: Sample) -> bytes:
    code = "<B" if sample.bits == 8 else "<H"
    return b"".join(
        struct.pack(code, value)
        for y in range(sample.height) for x in range(sample.width)
        for value in sample.pixel(x, y)
    )


def render(sample: Sample) -> bytes:
    """The whole file: header, pixels, then the one IFD and the values it points to."""
    pixels = _pixels(sample)
    channels = 3 if sample.rgb else 1
    assert len(pixels) == sample.width * sample.height * channels * sample.bits // 8
    text = sample.description.encode("ascii") + b"\0"
    software = b"omero-adi scripts/make-sample-images.py\0"
    tags: list[tuple[int, int, int, bytes]] = [  # (tag, type, count, value bytes)
        (256, LONG, 1, struct.pack("<I", sample.width)),  # ImageWidth
        (257, LONG, 1, struct.pack("<I", sample.height)),  # ImageLength
        (258, SHORT, channels, struct.pack(f"<{channels}H", *[sample.bits] * channels)),
        (259, SHORT, 1, struct.pack("<H", 1)),  # Compression: none
        (262, SHORT, 1, struct.pack("<H", 2 if sample.rgb else 1)),  # RGB / BlackIsZero
        (270, ASCII, len(text), text),  # ImageDescription
        (273, LONG, 1, struct.pack("<I", 8)),  # StripOffsets: right after the header
        (277, SHORT, 1, struct.pack("<H", channels)),  # SamplesPerPixel
        (278, LONG, 1, struct.pack("<I", sample.height)),  # RowsPerStrip: one strip
        (279, LONG, 1, struct.pack("<I", len(pixels))),  # StripByteCounts
        (282, RATIONAL, 1, struct.pack("<II", 72, 1)),  # XResolution
        (283, RATIONAL, 1, struct.pack("<II", 72, 1)),  # YResolution
        (284, SHORT, 1, struct.pack("<H", 1)),  # PlanarConfiguration: chunky
        (296, SHORT, 1, struct.pack("<H", 2)),  # ResolutionUnit: inch
        (305, ASCII, len(software), software),  # Software
        (339, SHORT, channels, struct.pack(f"<{channels}H", *[1] * channels)),  # unsigned
    ]
    ifd_offset = 8 + len(pixels) + len(pixels) % 2  # IFDs start on a word boundary
    extra_offset = ifd_offset + 2 + 12 * len(tags) + 4
    entries, extra = [], b""
    for tag, kind, count, value in tags:
        if len(value) <= 4:
            field = value.ljust(4, b"\0")
        else:
            field = struct.pack("<I", extra_offset + len(extra))
            extra += value + b"\0" * (len(value) % 2)
        entries.append(struct.pack("<HHI", tag, kind, count) + field)
    header = b"II" + struct.pack("<HI", 42, ifd_offset)
    ifd = struct.pack("<H", len(tags)) + b"".join(entries) + struct.pack("<I", 0)
    return header + pixels + b"\0" * (len(pixels) % 2) + ifd + extra


def main(argv: list[str]) -> int:
    target = Path(argv[argv.index("--dir") + 1]) if "--dir" in argv else TARGET
    stale = []
    for sample in SAMPLES:
        path, data = target / sample.name, render(sample)
        if "--check" in argv:
            if not path.exists() or path.read_bytes() != data:
                stale.append(str(path))
            continue
        path.write_bytes(data)
        print(f"wrote {path} ({len(data)} bytes)")
    if stale:
        print(f"out of date: {', '.join(stale)}; run scripts/make-sample-images.py",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
