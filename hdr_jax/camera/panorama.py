"""Perspective views of equirectangular panoramas (DrTMO's training scenes are
crops such as ``scene_80_10_120``: field of view 80 degrees, elevation 10, azimuth 120).

Angle conventions
-----------------
* Equirectangular (H, W): column u (pixel centre u + 0.5) is longitude
  lon = 2 pi (u + 0.5) / W - pi, so lon = 0 is the centre of the image (between the two middle
  columns for even W) and lon grows to the right; row v is latitude lat = pi/2 - pi (v + 0.5) / H
  (top row = up).
* World frame: x right, y up, z forward at lon = 0; direction (lon, lat) =
  (cos lat sin lon, sin lat, cos lat cos lon).
* A view looks at (lon, lat) = (azimuth, elevation): azimuth 0 looks at the centre column and
  positive azimuth turns right (towards larger u); positive elevation looks up. There is no roll:
  image right stays horizontal, image up is the camera's up. Crops are not mirrored.
* ``fov_deg`` is the horizontal field of view between the outer pixel *edges*; pixels are square,
  so a non-square crop has vertical fov 2 atan(tan(fov/2) h / w).
"""

from __future__ import annotations

import math

import numpy as np

_PANORAMA_ASPECT = 2.0
_PANORAMA_ASPECT_TOL = 0.01


def is_panorama(height: int, width: int) -> bool:
    """Equirectangular detection: a 2:1 aspect ratio within 1 %."""
    return abs(width / height - _PANORAMA_ASPECT) <= _PANORAMA_ASPECT_TOL * _PANORAMA_ASPECT


def view_rays(fov_deg: float, elevation_deg: float, azimuth_deg: float,
              size: int | tuple[int, int]) -> np.ndarray:
    """Unit world directions of the pixel centres of a view, shape (h, w, 3)."""
    h, w = (size, size) if np.ndim(size) == 0 else size
    h, w = int(h), int(w)
    if h < 1 or w < 1:
        raise ValueError(f"size must be positive, got {(h, w)}")
    if not 0 < fov_deg < 180:
        raise ValueError(f"fov_deg must lie in (0, 180), got {fov_deg}")
    half = math.tan(math.radians(fov_deg) / 2)
    # Image-plane coordinates at focal length 1, in units where the image spans [-half, half].
    xs = (np.arange(w) + 0.5 - w / 2) * (2 * half / w)
    ys = -(np.arange(h) + 0.5 - h / 2) * (2 * half / w)
    cam = np.stack(np.broadcast_arrays(xs[None, :], ys[:, None], np.ones((h, w))), -1)
    el, az = math.radians(elevation_deg), math.radians(azimuth_deg)
    pitch = np.array([[1, 0, 0], [0, math.cos(el), math.sin(el)], [0, -math.sin(el), math.cos(el)]])
    yaw = np.array([[math.cos(az), 0, math.sin(az)], [0, 1, 0], [-math.sin(az), 0, math.cos(az)]])
    d = cam @ (yaw @ pitch).T
    return d / np.linalg.norm(d, axis=-1, keepdims=True)


def _bilinear_wrap(img: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Bilinear sample at continuous pixel coordinates; columns wrap (360 degrees), rows clamp."""
    H, W = img.shape[:2]
    v = np.clip(v, 0.0, H - 1.0)
    u0, v0 = np.floor(u), np.floor(v)
    wu, wv = (u - u0)[..., None], (v - v0)[..., None]
    c0 = u0.astype(np.int64) % W
    c1 = (c0 + 1) % W
    r0 = v0.astype(np.int64)
    r1 = np.minimum(r0 + 1, H - 1)
    top = img[r0, c0] * (1 - wu) + img[r0, c1] * wu
    bottom = img[r1, c0] * (1 - wu) + img[r1, c1] * wu
    return top * (1 - wv) + bottom * wv


def perspective_crop(
    equirect: np.ndarray,
    fov_deg: float,
    elevation_deg: float,
    azimuth_deg: float,
    size: int | tuple[int, int] = 512,
) -> np.ndarray:
    """Rectilinear (pinhole) view of an equirectangular panorama (H, W, C) -> (h, w, C) float32.

    Bilinear sampling with horizontal wrap-around; conventions in the module docstring.
    """
    pano = np.asarray(equirect)
    if pano.ndim != 3:
        raise ValueError(f"equirect must have shape (H, W, C), got {pano.shape}")
    H, W = pano.shape[:2]
    d = view_rays(fov_deg, elevation_deg, azimuth_deg, size)
    lon = np.arctan2(d[..., 0], d[..., 2])
    lat = np.arcsin(np.clip(d[..., 1], -1.0, 1.0))
    u = (lon + math.pi) / (2 * math.pi) * W - 0.5
    v = (math.pi / 2 - lat) / math.pi * H - 0.5
    return _bilinear_wrap(pano.astype(np.float32), u, v).astype(np.float32)


def random_views(
    rng: np.random.Generator,
    n: int,
    fov_range: tuple[float, float] = (60.0, 90.0),
    elevation_range: tuple[float, float] = (-15.0, 30.0),
) -> list[tuple[float, float, float]]:
    """``n`` random (fov, elevation, azimuth) in degrees: fov and elevation uniform in their ranges,
    azimuth uniform in [-180, 180)."""
    (f0, f1), (e0, e1) = fov_range, elevation_range
    if not (0 < f0 <= f1 < 180 and -90 <= e0 <= e1 <= 90):
        raise ValueError(f"bad ranges: fov {fov_range}, elevation {elevation_range}")
    fov = rng.uniform(f0, f1, n)
    elev = rng.uniform(e0, e1, n)
    azim = rng.uniform(-180.0, 180.0, n)
    return [(float(a), float(b), float(c)) for a, b, c in zip(fov, elev, azim)]
