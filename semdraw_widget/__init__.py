"""semdraw_widget: paint with meanings in a notebook cell.

Names load lazily, so `import semdraw_widget` is quick, the engine imports without the widget stack,
and the canvas works without torch being imported (mask capture needs no model).
"""

from importlib import import_module

__version__ = "0.1.0"

_LAZY = {
    "SemanticCanvas": ".widget",
    "FrontendNotBuiltError": ".widget",
    "CanvasState": ".canvas_state",
    "StreamMultiDiffusion": ".engine",
    "StableMultiDiffusionPipeline": ".engine",
    "StableMultiDiffusionSDXLPipeline": ".engine",
    "StableMultiDiffusion3Pipeline": ".engine",
    "StableMultiDiffusionKolorsPipeline": ".engine",
    "StreamMultiDiffusionSDXL": ".engine",
    "StreamMultiDiffusion3": ".engine",
    "ModelNotFoundError": ".engine",
    "load_pipeline": ".engine",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'semdraw_widget' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_LAZY))
