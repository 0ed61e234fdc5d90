import numpy as np
import pytest


class SentMessages(list):
    """Messages a widget sent to the browser: (content, buffers) pairs."""

    def of_type(self, kind):
        return [(content, buffers) for content, buffers in self if content.get("type") == kind]


@pytest.fixture
def make_canvas():
    """Build SemanticCanvas instances whose outgoing messages are captured instead of sent."""
    from semdraw_widget import SemanticCanvas

    made = []

    def factory(*args, cls=SemanticCanvas, **kwargs):
        canvas = cls(*args, **kwargs)
        sent = SentMessages()
        canvas.send = lambda content, buffers=None: sent.append((content, list(buffers or [])))
        canvas.sent = sent
        made.append(canvas)
        return canvas

    yield factory
    for canvas in made:
        canvas.close()


def stroke_message(layer, x, y, w, h, value=255, rev=1, enc="raw"):
    """A browser -> kernel mask message covering one rectangle with one value."""
    import zlib

    raw = np.full((h, w), value, np.uint8).tobytes()
    payload = zlib.compress(raw) if enc == "deflate" else raw
    return {"type": "mask", "layer": layer, "x": x, "y": y, "w": w, "h": h, "enc": enc, "rev": rev}, [memoryview(payload)]
