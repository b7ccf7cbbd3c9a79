"""Scrubbing uploads: limits before decoding, three formats, nothing but pixels comes out."""

from __future__ import annotations

import io
import struct
import time
import zlib

import pytest
from PIL import Image, ImageCms, PngImagePlugin

from privacy.errors import ScrubError
from privacy.scrub import scrub, scrub_mask

CANARIES = [
    b"SERIAL-C4N4RY-1234",
    b"Jane Canary",
    b"COMMENT-CANARY",
    b"TEXT-CANARY",
    b"ITXT-CANARY",
    b"ZTXT-CANARY",
    b"CanaryCam",
]
XMP = (
    b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF '
    b'xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description '
    b'xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:creator>Jane Canary</dc:creator>'
    b"</rdf:Description></rdf:RDF></x:xmpmeta>"
)


def landscape_with_a_red_top_left() -> Image.Image:
    """40 wide, 20 high; red in the top-left quarter, blue elsewhere."""
    image = Image.new("RGB", (40, 20), (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, 20, 10))
    return image


def canary_jpeg() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90° clockwise to display
    exif[0x010F] = "CanaryCam"  # Make
    exif.get_ifd(0x8769)[0xA431] = "SERIAL-C4N4RY-1234"  # BodySerialNumber
    gps = exif.get_ifd(0x8825)
    gps[1], gps[2], gps[3], gps[4] = "N", (52.0, 22.0, 1.5), "E", (4.0, 53.0, 2.5)
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    buffer = io.BytesIO()
    landscape_with_a_red_top_left().save(
        buffer, "JPEG", quality=95, exif=exif, icc_profile=icc, comment=b"COMMENT-CANARY", xmp=XMP
    )
    data = buffer.getvalue()
    # The fixture really carries every canary (else the test below would prove nothing).
    for canary in [b"SERIAL-C4N4RY-1234", b"Jane Canary", b"COMMENT-CANARY", b"CanaryCam"]:
        assert canary in data
    reopened = Image.open(io.BytesIO(data))
    assert {"exif", "icc_profile", "comment", "xmp"} <= set(reopened.info)
    assert reopened.getexif().get_ifd(0x8825)[1] == "N"
    return data


def canary_png() -> bytes:
    chunks = PngImagePlugin.PngInfo()
    chunks.add_text("Comment", "TEXT-CANARY")
    chunks.add_itxt("Author", "ITXT-CANARY")
    chunks.add_text("Description", "ZTXT-CANARY", zip=True)
    chunks.add_itxt("XML:com.adobe.xmp", XMP.decode())
    buffer = io.BytesIO()
    landscape_with_a_red_top_left().save(buffer, "PNG", pnginfo=chunks)
    data = buffer.getvalue()
    assert b"TEXT-CANARY" in data and b"ITXT-CANARY" in data and b"zTXt" in data
    return data


def assert_clean(image: Image.Image) -> None:
    assert image.info == {}
    assert not image.getexif()
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    for canary in CANARIES:
        assert canary not in buffer.getvalue()


def test_jpeg_canary_comes_out_with_no_metadata_and_upright() -> None:
    clean = scrub(canary_jpeg())
    assert_clean(clean)
    assert clean.mode == "RGB"
    # orientation 6: the 40x20 landscape is shown rotated 90° clockwise -> 20 wide, 40 high,
    # and the red top-left corner moves to the top-right.
    assert clean.size == (20, 40)
    red, blue = clean.getpixel((17, 3)), clean.getpixel((3, 37))
    assert red[0] > 200 and red[2] < 60
    assert blue[2] > 200 and blue[0] < 60


def test_png_text_chunks_and_xmp_are_dropped() -> None:
    clean = scrub(canary_png())
    assert_clean(clean)
    assert clean.size == (40, 20) and clean.getpixel((0, 0)) == (255, 0, 0)


def test_webp_with_exif_and_xmp_is_cleaned() -> None:
    exif = Image.Exif()
    exif.get_ifd(0x8769)[0xA431] = "SERIAL-C4N4RY-1234"
    buffer = io.BytesIO()
    landscape_with_a_red_top_left().save(buffer, "WEBP", exif=exif, xmp=XMP, lossless=True)
    assert b"SERIAL-C4N4RY-1234" in buffer.getvalue()
    clean = scrub(buffer.getvalue())
    assert_clean(clean)
    assert clean.getpixel((0, 0)) == (255, 0, 0)


def test_phone_camera_mpo_jpeg_is_accepted_as_its_first_picture() -> None:
    buffer = io.BytesIO()
    first, second = landscape_with_a_red_top_left(), Image.new("RGB", (40, 20), (0, 255, 0))
    first.save(buffer, "MPO", save_all=True, append_images=[second])
    assert Image.open(io.BytesIO(buffer.getvalue())).format == "MPO"
    clean = scrub(buffer.getvalue())
    assert_clean(clean)
    assert clean.size == (40, 20) and clean.getpixel((0, 0))[0] > 200


def test_animated_webp_gives_its_first_frame() -> None:
    buffer = io.BytesIO()
    first, second = Image.new("RGB", (8, 8), (255, 0, 0)), Image.new("RGB", (8, 8), (0, 255, 0))
    first.save(buffer, "WEBP", save_all=True, append_images=[second], lossless=True)
    assert scrub(buffer.getvalue()).getpixel((1, 1)) == (255, 0, 0)


def test_transparent_png_becomes_rgb_on_white() -> None:
    image = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    clean = scrub(buffer.getvalue())
    assert clean.mode == "RGB" and clean.getpixel((1, 1)) == (255, 255, 255)


def test_mask_comes_out_as_one_grey_channel() -> None:
    image = Image.new("RGB", (8, 8), (0, 0, 0))
    image.paste((255, 255, 255), (0, 0, 4, 8))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    mask = scrub_mask(buffer.getvalue())
    assert mask.mode == "L" and mask.getpixel((1, 1)) == 255 and mask.getpixel((6, 1)) == 0
    assert mask.info == {}


def test_sixteen_bit_grey_png_is_scaled_not_clipped() -> None:
    image = Image.new("I;16", (4, 4), 32768)
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    clean = scrub(buffer.getvalue())
    assert 120 <= clean.getpixel((0, 0))[0] <= 135


@pytest.mark.parametrize(
    "fmt,data",
    [
        ("gif", b"GIF89a" + b"\x00" * 40),
        ("tiff", b"II*\x00" + b"\x00" * 40),
        ("bmp", b"BM" + b"\x00" * 40),
        ("svg", b"<svg xmlns='http://www.w3.org/2000/svg'/>"),
        ("heic", b"\x00\x00\x00\x18ftypheic" + b"\x00" * 20),
        ("empty", b""),
    ],
)
def test_other_formats_are_refused_with_a_sentence_naming_the_accepted_ones(
    fmt: str, data: bytes
) -> None:
    with pytest.raises(ScrubError) as refused:
        scrub(data)
    assert refused.value.code == "upload_format"
    assert "PNG, JPEG and WebP" in str(refused.value)


def test_file_over_the_byte_limit_is_refused_before_parsing() -> None:
    with pytest.raises(ScrubError) as refused:
        scrub(b"\x89PNG\r\n\x1a\n" + b"\x00" * 2000, max_bytes=1000)
    assert refused.value.code == "upload_too_large" and "0.001 MB" in str(refused.value)


def png_declaring(width: int, height: int) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 1024))
        + chunk(b"IEND", b"")
    )


def test_decompression_bomb_is_refused_in_well_under_a_second() -> None:
    bomb = png_declaring(50_000, 50_000)
    assert len(bomb) < 200
    started = time.perf_counter()
    with pytest.raises(ScrubError) as refused:
        scrub(bomb)
    assert time.perf_counter() - started < 0.25
    assert refused.value.code == "upload_too_many_pixels"


def test_picture_just_over_a_low_pixel_limit_is_refused() -> None:
    started = time.perf_counter()
    with pytest.raises(ScrubError, match="megapixels"):
        scrub(png_declaring(2001, 1000), max_pixels=2_000_000)
    assert time.perf_counter() - started < 0.25


def test_truncated_jpeg_is_refused_with_a_sentence() -> None:
    data = canary_jpeg()
    with pytest.raises(ScrubError) as refused:
        scrub(data[: len(data) // 2])
    assert refused.value.code == "upload_damaged"
    assert "\n" not in str(refused.value)


def test_garbage_after_a_png_signature_is_refused() -> None:
    with pytest.raises(ScrubError) as refused:
        scrub(b"\x89PNG\r\n\x1a\n" + b"not really a png" * 10)
    assert refused.value.code == "upload_damaged"


def test_refusals_carry_their_limit_so_translations_keep_the_figure() -> None:
    # Issue 10: PrivacyError had no params, so "too large" lost its limit in Chinese.
    from privacy.errors import PrivacyError
    from privacy.scrub import scrub
    from webui.i18n import error_text

    with pytest.raises(PrivacyError) as caught:
        scrub(b"\x89PNG" + bytes(3_000_000), max_bytes=2_000_000)
    assert caught.value.params == {"megabytes": "2"}
    assert "2 MB" in str(caught.value)
    assert "2 MB" in error_text(caught.value, "zh")
    assert "2 MB" in error_text(caught.value, "en")
