from __future__ import annotations

import io

import pytest
from PIL import Image

from ml import images
from tests.images import (
    HTML_BYTES,
    SVG_BYTES,
    bomb_png_bytes,
    jpeg_bytes,
    png_bytes,
    tiff_bytes,
    truncated_jpeg_bytes,
)


def test_a_good_png_loads_as_rgb_with_its_size_and_hash():
    data = png_bytes((32, 24))
    info = images.inspect_image(data)
    assert (info.format, info.width, info.height, info.n_bytes) == ("PNG", 32, 24, len(data))
    assert len(info.sha256) == 64
    assert images.load_image(data).mode == "RGB"


def test_a_jpeg_on_disk_loads_from_its_path(tmp_path):
    path = tmp_path / "a.jpg"
    path.write_bytes(jpeg_bytes())
    assert images.load_image(path).size == (40, 30)


def test_a_truncated_jpeg_is_reported_corrupt():
    with pytest.raises(images.CorruptImage) as exc:
        images.inspect_image(truncated_jpeg_bytes())
    assert exc.value.state == "corrupt"


def test_a_decompression_bomb_is_refused_before_any_pixel_is_decoded():
    data = bomb_png_bytes(50_000)
    assert len(data) < 2_000
    with pytest.raises(images.ImageTooLarge, match="decompression bomb"):
        images.load_image(data)


def test_the_pixel_limit_is_ours_not_pillows():
    with pytest.raises(images.ImageTooLarge):
        images.load_image(png_bytes((100, 100)), max_pixels=5_000)


@pytest.mark.parametrize(
    ("data", "error", "state"),
    [
        (HTML_BYTES, images.FormatNotAllowed, "refused"),
        (b"", images.NotAnImage, "invalid"),
        (b"\x00\x01\x02garbage", images.FormatNotAllowed, "refused"),
        (SVG_BYTES, images.FormatNotAllowed, "refused"),
    ],
)
def test_bytes_that_are_not_an_allowed_image_are_refused_without_decoding(data, error, state):
    with pytest.raises(error) as exc:
        images.inspect_image(data)
    assert exc.value.state == state


def test_a_tiff_is_refused_as_a_disallowed_format():
    with pytest.raises(images.FormatNotAllowed, match="allowed formats"):
        images.inspect_image(tiff_bytes())


def test_a_file_over_the_byte_cap_is_refused_too_large(tmp_path):
    path = tmp_path / "big.png"
    path.write_bytes(png_bytes((64, 64)))
    with pytest.raises(images.ImageTooLarge):
        images.read_bytes(path, max_bytes=100)


def test_a_stream_is_read_no_further_than_the_cap():
    stream = io.BytesIO(b"x" * 10_000)
    with pytest.raises(images.ImageTooLarge):
        images.read_bytes(stream, max_bytes=1_000)
    assert stream.tell() == 1_001


def test_a_missing_file_is_an_image_error(tmp_path):
    with pytest.raises(images.ImageError, match="not found"):
        images.read_bytes(tmp_path / "nope.png")


def test_a_thumbnail_fits_the_box_and_is_a_jpeg():
    thumb = images.make_thumbnail(png_bytes((400, 200)), size=64)
    image = Image.open(io.BytesIO(thumb))
    assert image.format == "JPEG"
    assert max(image.size) == 64
