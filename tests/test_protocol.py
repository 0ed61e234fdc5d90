import io
import zlib

import numpy as np
import pytest
from PIL import Image

from semdraw_widget import protocol
from semdraw_widget.protocol import ProtocolError


def mask_content(**overrides):
    content = {"type": "mask", "layer": "a", "x": 2, "y": 3, "w": 4, "h": 2, "enc": "raw", "rev": 1}
    content.update(overrides)
    return content


def test_raw_and_deflate_mask_decode_to_the_same_patch():
    data = np.arange(8, dtype=np.uint8).reshape(2, 4)
    raw = protocol.decode_mask_message(mask_content(), [data.tobytes()], 16, 16)
    packed = protocol.decode_mask_message(mask_content(enc="deflate"), [zlib.compress(data.tobytes())], 16, 16)
    assert (raw.x, raw.y, raw.w, raw.h, raw.layer) == (2, 3, 4, 2, "a")
    np.testing.assert_array_equal(raw.data, data)
    np.testing.assert_array_equal(packed.data, data)


@pytest.mark.parametrize(
    "overrides, buffers, needle",
    [
        ({"x": 14}, [bytes(8)], "outside"),
        ({"y": -1}, [bytes(8)], ">= 0"),
        ({"w": 0}, [bytes(0)], ">= 1"),
        ({"w": 2.5}, [bytes(8)], "integer"),
        ({"layer": ""}, [bytes(8)], "layer id"),
        ({}, [bytes(7)], "needs 8"),
        ({}, [], "exactly one"),
        ({"enc": "gzip"}, [bytes(8)], "unknown mask encoding"),
        ({"enc": "deflate"}, [b"not deflate"], "not valid deflate"),
        ({"enc": "deflate"}, [zlib.compress(bytes(10_000))], "needs 8"),  # bounded inflate: no zip bombs
    ],
)
def test_malformed_mask_messages_are_rejected_with_a_reason(overrides, buffers, needle):
    with pytest.raises(ProtocolError, match=needle):
        protocol.decode_mask_message(mask_content(**overrides), buffers, 16, 16)


def test_mask_messages_round_trip_and_are_split_into_bands(monkeypatch):
    mask = (np.random.default_rng(0).random((64, 48)) * 255).astype(np.uint8)
    monkeypatch.setattr(protocol, "MAX_MESSAGE_BYTES", 48 * 10)  # 10 rows per band
    messages = protocol.mask_messages("a", mask, "sync")
    assert len(messages) == 7
    rebuilt = np.zeros_like(mask)
    for content, buffers in messages:
        assert content["origin"] == "sync"
        patch = protocol.decode_mask_message(content, buffers, 48, 64)
        rebuilt[patch.y : patch.y + patch.h, patch.x : patch.x + patch.w] = patch.data
    np.testing.assert_array_equal(rebuilt, mask)


def test_actions_and_acks_are_validated():
    assert protocol.decode_action({"name": "start"}) == "start"
    with pytest.raises(ProtocolError, match="unknown action"):
        protocol.decode_action({"name": "explode"})
    assert protocol.decode_ack({"seq": 3}) == 3
    for bad in (None, -1, "3", True):
        with pytest.raises(ProtocolError):
            protocol.decode_ack({"seq": bad})


def test_frames_encode_as_valid_images_of_the_right_size():
    rgb = np.zeros((24, 40, 3), np.uint8)
    rgb[:, :20] = (255, 0, 0)
    for fmt, pil_format in (("jpeg", "JPEG"), ("png", "PNG")):
        image = Image.open(io.BytesIO(protocol.encode_image(rgb, fmt)))
        assert image.format == pil_format and image.size == (40, 24)
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(protocol.encode_image(rgb, "png")))), rgb)


def test_background_image_is_fitted_to_the_canvas_and_bad_files_are_rejected():
    out = io.BytesIO()
    Image.new("RGB", (100, 50), (0, 128, 255)).save(out, format="PNG")
    rgb = protocol.decode_background_image({"format": "png"}, [out.getvalue()], 32, 32)
    assert rgb.shape == (32, 32, 3) and tuple(rgb[16, 16]) == (0, 128, 255)
    assert protocol.decode_background_image({"clear": True}, [], 32, 32) is None
    with pytest.raises(ProtocolError, match="could not read"):
        protocol.decode_background_image({"format": "png"}, [b"garbage"], 32, 32)
    with pytest.raises(ProtocolError, match="format"):
        protocol.decode_background_image({"format": "bmp"}, [out.getvalue()], 32, 32)
    huge = io.BytesIO()  # a small file of a huge image: refused before a pixel is decoded
    Image.new("1", (8200, 8200)).save(huge, format="PNG")
    assert len(huge.getvalue()) < protocol.MAX_IMAGE_BYTES
    with pytest.raises(ProtocolError, match="8200x8200 pixels; the limit is 64 megapixels"):
        protocol.decode_background_image({"format": "png"}, [huge.getvalue()], 32, 32)
