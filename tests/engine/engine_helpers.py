"""Small helpers shared by the engine tests."""

import numpy as np

SIZE = 64


def box_mask(top, bottom, left, right, size=SIZE):
    mask = np.zeros((size, size), dtype=bool)
    mask[top:bottom, left:right] = True
    return mask
