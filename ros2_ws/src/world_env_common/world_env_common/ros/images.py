"""sensor_msgs/Image <-> numpy without cv_bridge.

Camera drivers publish many encodings and pad rows (``step`` > width * channels); these
functions accept what drivers send and raise ``ImageError`` with the reason when a message
cannot be a valid image, so a node can log the reason and drop the message.
"""

from __future__ import annotations

import numpy as np
from sensor_msgs.msg import Image

# encoding -> (channels, index order that yields RGB, or None for mono)
_ENCODINGS = {
    "rgb8": (3, (0, 1, 2)),
    "bgr8": (3, (2, 1, 0)),
    "rgba8": (4, (0, 1, 2)),
    "bgra8": (4, (2, 1, 0)),
    "mono8": (1, None),
}
SUPPORTED_ENCODINGS = tuple(_ENCODINGS)


class ImageError(ValueError):
    """A message that cannot be decoded as an 8-bit colour or mono image."""


def image_to_rgb(msg: Image) -> np.ndarray:
    """Decode a ``sensor_msgs/Image`` into an (H, W, 3) uint8 RGB array (a copy)."""
    encoding = msg.encoding.lower()
    if encoding not in _ENCODINGS:
        raise ImageError(f"unsupported encoding '{msg.encoding}' (supported: {', '.join(SUPPORTED_ENCODINGS)})")
    channels, order = _ENCODINGS[encoding]
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height <= 0 or width <= 0:
        raise ImageError(f"empty image {width}x{height}")
    if step < width * channels:
        raise ImageError(f"step {step} is smaller than width {width} x {channels} channels")
    data = np.frombuffer(bytes(msg.data), dtype=np.uint8) if not isinstance(msg.data, np.ndarray) else msg.data
    if data.size != step * height:
        raise ImageError(f"data has {data.size} bytes, expected step {step} x height {height} = {step * height}")
    rows = data.reshape(height, step)[:, : width * channels].reshape(height, width, channels)
    if order is None:
        return np.repeat(rows, 3, axis=2)
    return np.ascontiguousarray(rows[:, :, list(order)])


def rgb_to_image(rgb: np.ndarray, encoding: str = "rgb8", header=None) -> Image:
    """Encode an (H, W, 3) uint8 RGB array as a ``sensor_msgs/Image`` in rgb8 or bgr8."""
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ImageError(f"expected an (H, W, 3) uint8 array, got {rgb.shape} {rgb.dtype}")
    if encoding not in ("rgb8", "bgr8"):
        raise ImageError(f"can encode rgb8 or bgr8, not '{encoding}'")
    pixels = rgb if encoding == "rgb8" else rgb[:, :, ::-1]
    msg = Image()
    if header is not None:
        msg.header = header
    msg.height, msg.width = int(rgb.shape[0]), int(rgb.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = 0
    msg.step = 3 * msg.width
    msg.data = np.ascontiguousarray(pixels).tobytes()
    return msg
