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
