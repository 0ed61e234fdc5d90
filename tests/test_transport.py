"""The transport per direction (transport.py): a view's probe is answered, and a direction whose buffers do
not survive falls back to base64 in the JSON content, the messages otherwise the same."""

import base64
import io

import numpy as np
import pytest
from PIL import Image

from widget_helpers import stroke_message
from semdraw_widget.transport import PROBE_BYTES


def from_browser(canvas, content, buffers=()):
    canvas._handle_custom_msg(content, list(buffers))


def probe(canvas, view, buffers):
    """A view's probe as it arrives (buffers as the front end let them through); returns the kernel's reply."""
    canvas.sent.clear()
    from_browser(canvas, {"type": "probe", "view": view}, buffers)
    (reply,) = canvas.sent.of_type("probe_reply")
    return reply


def test_a_probe_that_arrives_intact_keeps_buffers_both_ways(make_canvas):
    canvas = make_canvas(width=16, height=16)
    assert canvas.transport == {"to_kernel": "unknown", "to_browser": "unknown"}
    content, buffers = probe(canvas, "v1", [memoryview(PROBE_BYTES)])
    assert content == {"type": "probe_reply", "view": "v1", "to_kernel": "binary"}
    assert [bytes(b) for b in buffers] == [PROBE_BYTES], "the reply carries the probe back as a buffer"
    from_browser(canvas, {"type": "transport", "view": "v1", "to_browser": "binary"})
    assert canvas.transport == {"to_kernel": "binary", "to_browser": "binary"}
    layer = canvas.add_layer("a")
    canvas.sent.clear()
    canvas.set_mask(layer, np.ones((16, 16), bool))
    (content, buffers), = canvas.sent.of_type("mask")
    assert len(buffers) == 1 and "buffer_b64" not in content
    assert canvas.status == ""


@pytest.mark.parametrize("arrived", [[], [PROBE_BYTES[:-1]], [PROBE_BYTES.replace(b"\xff", b"?")]], ids=["dropped", "cut", "re-encoded"])
def test_a_probe_whose_buffer_did_not_survive_makes_the_view_send_base64(make_canvas, arrived):
    canvas = make_canvas(width=16, height=16)
    content, buffers = probe(canvas, "v1", arrived)
    assert content["to_kernel"] == "base64" and [bytes(b) for b in buffers] == [PROBE_BYTES]
    assert canvas.transport["to_kernel"] == "base64"
    # ... and a stroke in base64 is the same stroke
    layer = canvas.add_layer("a")
    stroke, payload = stroke_message(layer, 2, 3, 4, 5, value=200, enc="deflate")
    from_browser(canvas, {**stroke, "buffer_b64": base64.b64encode(bytes(payload[0])).decode()})
    mask = canvas.get_mask(layer)
    assert mask[3:8, 2:6].min() == pytest.approx(200 / 255) and mask.sum() == pytest.approx(20 * 200 / 255)
    assert canvas.status == ""


def test_once_a_view_receives_no_buffers_every_payload_leaves_as_base64(make_canvas):
    canvas = make_canvas(width=16, height=16)
    layer = canvas.add_layer("a")
    probe(canvas, "colab", [PROBE_BYTES])
    from_browser(canvas, {"type": "transport", "view": "colab", "to_browser": "base64"})
    probe(canvas, "lab", [PROBE_BYTES])  # another view, where buffers work: messages go to every view at once
    from_browser(canvas, {"type": "transport", "view": "lab", "to_browser": "binary"})
    assert canvas.transport == {"to_kernel": "binary", "to_browser": "base64"}

    canvas.sent.clear()
    square = np.zeros((16, 16), np.uint8)
    square[4:8, 4:8] = 255
    canvas.set_mask(layer, square)
    canvas.set_background_image(np.full((16, 16, 3), 90, np.uint8))
    from_browser(canvas, {"type": "sync", "view": "colab"})
    kinds = [content["type"] for content, _ in canvas.sent]
    assert kinds == ["mask", "background_image", "mask", "background_image", "synced"]
    for content, buffers in canvas.sent:
        assert buffers == [], f"{content['type']} still carries a buffer"
    (python_mask, _), (sync_mask, _) = canvas.sent.of_type("mask")
    assert python_mask["origin"] == "python" and sync_mask["origin"] == "sync" and sync_mask["view"] == "colab"
    import zlib

    raw = base64.b64decode(sync_mask["buffer_b64"])
    raw = zlib.decompress(raw) if sync_mask["enc"] == "deflate" else raw
    np.testing.assert_array_equal(np.frombuffer(raw, np.uint8).reshape(16, 16), square)
    background = Image.open(io.BytesIO(base64.b64decode(canvas.sent.of_type("background_image")[0][0]["buffer_b64"])))
    assert np.asarray(background)[0, 0].tolist() == [90, 90, 90]


@pytest.mark.parametrize(
    "content, needle",
    [
        ({"type": "probe"}, "probe: view must be a non-empty string id"),
        ({"type": "transport", "view": "v1", "to_browser": "pigeons"}, "to_browser must be 'binary' or 'base64'"),
        ({"type": "mask", "layer": "L", "x": 0, "y": 0, "w": 2, "h": 2, "buffer_b64": "%%%"}, "not valid base64"),
        ({"type": "mask", "layer": "L", "x": 0, "y": 0, "w": 2, "h": 2, "buffer_b64": 7}, "must be a base64 string"),
        ({"type": "mask", "layer": "L", "x": 0, "y": 0, "w": 2, "h": 2, "buffer_b64": "AAAA"}, "needs 4"),
    ],
)
def test_damaged_transport_messages_are_visible_errors(make_canvas, content, needle):
    canvas = make_canvas(width=16, height=16)
    canvas.add_layer("a", id="L")
    from_browser(canvas, content)
    assert needle in canvas.status
    assert canvas.get_mask("L").sum() == 0
    assert canvas.transport["to_browser"] == "unknown"
