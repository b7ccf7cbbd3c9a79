"""Saving a finished picture with nothing in it but pixels and an honest "made by AI" label.

Every file carries one XMP packet that says, in the IPTC vocabulary that search engines, photo
tools and the C2PA/IPTC guidance read, that the picture was made by a trained algorithm
(``trainedAlgorithmicMedia``) or is a photo changed by one
(``compositeWithTrainedAlgorithmicMedia``).
Nothing else: no prompt, seed, model, user, date, software name or colour profile.

Saving the prompt and settings is an opt-in per user. Only when the caller passes ``parameters``
are they written, in the places other painting tools look: a PNG text chunk named
``parameters`` (the AUTOMATIC1111 convention), or the EXIF ``UserComment`` for JPEG and WebP.
"""

from __future__ import annotations

import io
from typing import Literal
from xml.sax.saxutils import escape

from PIL import Image, PngImagePlugin

Format = Literal["png", "webp", "jpeg"]

SOURCE_TYPE_NAMESPACE = "http://cv.iptc.org/newscodes/digitalsourcetype/"
GENERATED = SOURCE_TYPE_NAMESPACE + "trainedAlgorithmicMedia"
PHOTO_BASED = SOURCE_TYPE_NAMESPACE + "compositeWithTrainedAlgorithmicMedia"
_XMP_PNG_KEY = "XML:com.adobe.xmp"
_EXIF_IFD = 0x8769
_USER_COMMENT = 0x9286
JPEG_QUALITY = 92
WEBP_QUALITY = 90


def ai_label_xmp(*, photo_based: bool) -> bytes:
    """The XMP packet that labels a picture as AI-generated (IPTC digital source type)."""
    source = PHOTO_BASED if photo_based else GENERATED
    return (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>'
        '<x:xmpmeta xmlns:x="adobe:ns:meta/">'
        '<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        '<rdf:Description rdf:about="" '
        'xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/">'
        f"<Iptc4xmpExt:DigitalSourceType>{escape(source)}</Iptc4xmpExt:DigitalSourceType>"
        "</rdf:Description></rdf:RDF></x:xmpmeta>"
        '<?xpacket end="r"?>'
    ).encode()


def encode_picture(
    image: Image.Image,
    fmt: Format = "png",
    *,
    photo_based: bool,
    parameters: str | None = None,
) -> bytes:
    """Encode ``image`` as PNG, WebP or JPEG bytes carrying only the AI label (+ opt-in text)."""
    if fmt not in ("png", "webp", "jpeg"):
        raise ValueError("fmt must be 'png', 'webp' or 'jpeg'")
    keep_alpha = fmt != "jpeg" and image.mode in ("RGBA", "LA", "PA")
    mode = "RGBA" if keep_alpha else "RGB"
    converted = image.convert(mode)
    # Rebuild from raw pixels so nothing in image.info (from a pipeline or a loader) can leak.
    clean = Image.frombytes(mode, converted.size, converted.tobytes())
    xmp = ai_label_xmp(photo_based=photo_based)
    buffer = io.BytesIO()
    if fmt == "png":
        chunks = PngImagePlugin.PngInfo()
        chunks.add_itxt(_XMP_PNG_KEY, xmp.decode("utf-8"))
        if parameters is not None:
            chunks.add_itxt("parameters", parameters)
        clean.save(buffer, format="PNG", pnginfo=chunks, optimize=False)
    else:
        options: dict[str, object] = {"xmp": xmp}
        if parameters is not None:
            exif = Image.Exif()
            exif.get_ifd(_EXIF_IFD)[_USER_COMMENT] = b"UNICODE\x00" + parameters.encode(
                "utf-16-be"
            )
            options["exif"] = exif
        if fmt == "jpeg":
            clean.save(buffer, format="JPEG", quality=JPEG_QUALITY, **options)
        else:
            clean.save(buffer, format="WEBP", quality=WEBP_QUALITY, **options)
    return buffer.getvalue()
