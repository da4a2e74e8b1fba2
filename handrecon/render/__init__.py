"""Batched triangle-mesh rendering in pure torch (CPU and CUDA): z-buffer rasterization with
differentiable barycentrics, attribute interpolation, Lambert shading.

Camera frame x right, y down, z forward (metres); the centre of pixel (row r, col c) is at image
coordinates (x=c, y=r), as in InterHand2.6M / OpenCV. The projection itself lives in
:mod:`handrecon.camera`, which readers and models import without this package.
"""

from .raster import (
    DEFAULT_CHUNK,
    Fragments,
    face_normals,
    interpolate,
    interpolate_packed,
    rasterize,
    vertex_normals,
)
from .shade import composite, face_camera, render_mesh, shade_lambert

__all__ = [
    "DEFAULT_CHUNK",
    "Fragments",
    "composite",
    "face_camera",
    "face_normals",
    "interpolate",
    "interpolate_packed",
    "rasterize",
    "render_mesh",
    "shade_lambert",
    "vertex_normals",
]
