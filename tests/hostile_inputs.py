"""Files an attacker would hand the widget, for the defect tests (test_bounds.py) and the fuzz tests."""

from __future__ import annotations

import io
import json
import struct
import zipfile
import zlib

from PIL import Image


def png_bytes(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def png_bomb(width: int, height: int) -> bytes:
    """A small PNG file of a huge all-black grey image, deflated row by row (never held whole in memory)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    packer = zlib.compressobj(9)
    row = bytes(width + 1)  # filter byte 0, then the row's pixels
    idat = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def write_scene(path, scene: dict | str, members: dict[str, bytes] = {}):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("scene.json", scene if isinstance(scene, str) else json.dumps(scene))
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def scene_json(width=16, height=16, layers=(), **fields) -> dict:
    return {"format": "semdraw-scene", "version": 2, "width": width, "height": height, "layers": list(layers),
            "background": {"prompt": "", "negative_prompt": ""}, "has_background_image": False, **fields}
