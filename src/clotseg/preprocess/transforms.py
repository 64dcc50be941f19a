"""SimpleITK transforms to and from their JSON form: the one place that does it.

A registration's transform is recorded in ``preprocess.json`` (``registration.transform``)
and read back to resample (:func:`clotseg.preprocess.resample.resample_to_grid` accepts the
JSON form too, through :func:`as_sitk_transform`). Only the rigid
:class:`SimpleITK.Euler3DTransform` that :func:`clotseg.preprocess.register.register_rigid`
produces is written; the matrix, translation, rotation angle and translation length are
written alongside the parameters for people reading the file, and ignored on reading.
"""

from __future__ import annotations

from typing import Any

import numpy as np

TRANSFORM_TYPE = "Euler3DTransform"


def transform_to_dict(transform: Any) -> dict:
    """JSON form of an Euler3D transform: 6 parameters (rotations about x, y, z in radians,
    then translation in mm), the centre of rotation, and the matrix/translation it means.

    Args:
        transform: a SimpleITK Euler3D transform (or one convertible to it).

    Examples:
        >>> import SimpleITK as sitk
        >>> d = transform_to_dict(sitk.Euler3DTransform())
        >>> d["type"], d["parameters"], d["rotation_deg"]
        ('Euler3DTransform', [0.0, 0.0, 0.0, 0.0, 0.0, 0.0], 0.0)
    """
    import SimpleITK as sitk

    tx = sitk.Euler3DTransform(transform)
    params = [float(v) for v in tx.GetParameters()]
    return {"type": TRANSFORM_TYPE, "maps": "CTA point -> NCCT point (LPS, mm)",
            "parameters": params, "center": [float(c) for c in tx.GetCenter()],
            "compute_zyx": bool(tx.GetComputeZYX()),
            "matrix": [float(v) for v in tx.GetMatrix()],
            "translation": [float(v) for v in tx.GetTranslation()],
            "rotation_deg": float(np.degrees(rotation_angle(tx.GetMatrix()))),
            "translation_mm": float(np.linalg.norm(params[3:]))}


def transform_from_dict(data: dict) -> Any:
    """Rebuild the SimpleITK transform saved by :func:`transform_to_dict`.

    Args:
        data: the JSON form (``parameters`` required; ``center`` and ``compute_zyx``
            default to the origin and False).

    Examples:
        >>> tx = transform_from_dict({"parameters": [0, 0, 0, 1.0, 2.0, 3.0]})
        >>> tx.TransformPoint((0.0, 0.0, 0.0))
        (1.0, 2.0, 3.0)
    """
    import SimpleITK as sitk

    if data.get("type", TRANSFORM_TYPE) != TRANSFORM_TYPE:
        raise ValueError(f"unsupported transform type {data.get('type')!r}")
    tx = sitk.Euler3DTransform()
    tx.SetCenter([float(c) for c in data.get("center", (0.0, 0.0, 0.0))])
    tx.SetComputeZYX(bool(data.get("compute_zyx", False)))
    tx.SetParameters([float(p) for p in data["parameters"]])
    return tx


def as_sitk_transform(transform: Any) -> Any:
    """A SimpleITK transform from ``None`` (identity), a transform, or its JSON dict."""
    import SimpleITK as sitk

    if transform is None:
        return sitk.Transform()
    if isinstance(transform, sitk.Transform):
        return transform
    if isinstance(transform, dict):
        return transform_from_dict(transform)
    raise TypeError(f"unsupported transform {type(transform).__name__}")


def rotation_angle(matrix: Any) -> float:
    """Rotation angle (radians) of a 3×3 rotation matrix given as 9 numbers."""
    m = np.asarray(matrix, dtype=float).reshape(3, 3)
    return float(np.arccos(np.clip((np.trace(m) - 1) / 2, -1.0, 1.0)))
