"""3D Slicer segmentation files (``.seg.nrrd``) in and out.

A ``.seg.nrrd`` is an ordinary NRRD labelmap whose header carries, per segment ``N``,
``SegmentN_Name``, ``SegmentN_LabelValue``, ``SegmentN_Layer`` (the 4th-axis index of a
multi-layer file, where overlapping segments live), ``SegmentN_Color``,
``SegmentN_Extent`` and a few more keys. SimpleITK reads and writes such a file with its
geometry and hands the header keys over as metadata, so only the segment bookkeeping is
written here by hand (no library implements Slicer's segment keys).

Reading picks the clot: the segment named like a clot (``clot``, ``thrombus``, ...), or
the only segment. Several segments of which none (or more than one) is named so is an
error naming the file, never a guess.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from clotseg.errors import VolumeReadError
from clotseg.io.atomic import atomic_path
from clotseg.io.volume import Volume

SEG_SUFFIX = ".seg.nrrd"
#: Segment names taken for the clot (whole words, case-insensitive).
CLOT_NAME = re.compile(r"\b(clots?|thromb(us|i)|emboli?|embolus)\b", re.IGNORECASE)
#: Dark red, Slicer's colour range 0-1.
CLOT_COLOR = (0.85, 0.12, 0.12)
#: Slicer terminology entry for the segment: SNOMED CT "Morphologically altered structure"
#: / "Thrombus", as Slicer's own terminology browser writes it.
CLOT_TERMINOLOGY = ("Segmentation category and type - 3D Slicer General Anatomy list"
                    "~SCT^49755003^Morphologically Altered Structure~SCT^396339007^Thrombus"
                    "~^^~Anatomic codes - DICOM master list~^^~^^")


def is_seg_nrrd(path: str | Path) -> bool:
    """True for a file name ending in ``.seg.nrrd``."""
    return Path(path).name.lower().endswith(SEG_SUFFIX)


def seg_stem(path: str | Path) -> str:
    """``p07.seg.nrrd`` -> ``p07``."""
    name = Path(path).name
    return name[: -len(SEG_SUFFIX)]


def segments(meta: dict[str, str]) -> list[dict]:
    """The segments described in a header: name, label value, layer (sorted by index)."""
    found = []
    for key, name in meta.items():
        m = re.fullmatch(r"Segment(\d+)_Name", key)
        if not m:
            continue
        i = m[1]
        found.append({"index": int(i), "name": name.strip(),
                      "value": int(float(meta.get(f"Segment{i}_LabelValue", "1") or 1)),
                      "layer": int(float(meta.get(f"Segment{i}_Layer", "0") or 0))})
    return sorted(found, key=lambda s: s["index"])


def pick_clot_segment(path: Path, segs: list[dict]) -> dict:
    """The clot segment of a file, or a :class:`VolumeReadError` saying why none is."""
    if not segs:
        raise VolumeReadError(path, "no segments in this Slicer segmentation (no "
                              "Segment0_Name in the header)")
    named = [s for s in segs if CLOT_NAME.search(s["name"])]
    if len(named) == 1:
        return named[0]
    if len(segs) == 1:
        return segs[0]
    names = ", ".join(repr(s["name"]) for s in segs)
    if named:
        raise VolumeReadError(path, f"{len(named)} segments look like the clot ({names}); "
                              "keep one segment named 'clot' (or merge them)")
    raise VolumeReadError(path, f"{len(segs)} segments ({names}) and none is named 'clot' or "
                          "'thrombus': rename the clot segment")


def read_seg_nrrd(path: str | Path) -> Volume:
    """The clot segment of a Slicer ``.seg.nrrd`` as a 0/1 uint8 :class:`Volume`."""
    import SimpleITK as sitk

    path = Path(path)
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else "unreadable"
        raise VolumeReadError(path, f"cannot read Slicer segmentation: {reason}") from None
    meta = {k: image.GetMetaData(k) for k in image.GetMetaDataKeys()}
    seg = pick_clot_segment(path, segments(meta))
    layers = image.GetNumberOfComponentsPerPixel()
    if image.GetDimension() == 4:  # layers stored as a 4th axis rather than components
        if seg["layer"] >= image.GetSize()[3]:
            raise VolumeReadError(path, f"segment {seg['name']!r} is on layer {seg['layer']} "
                                  f"but the file has {image.GetSize()[3]}")
        image = image[:, :, :, seg["layer"]]
    elif layers > 1:
        if seg["layer"] >= layers:
            raise VolumeReadError(path, f"segment {seg['name']!r} is on layer {seg['layer']} "
                                  f"but the file has {layers}")
        image = sitk.VectorIndexSelectionCast(image, seg["layer"])
    if image.GetDimension() != 3:
        raise VolumeReadError(path, f"expected a 3D segmentation, found "
                              f"{image.GetDimension()}D")
    vol = Volume.from_sitk(image)
    return vol.with_array((np.asarray(vol.array) == seg["value"]).astype(np.uint8))


def seg_nrrd_metadata(mask: np.ndarray, *, name: str = "clot",
                      color: tuple[float, float, float] = CLOT_COLOR) -> dict[str, str]:
    """Header keys of a one-segment Slicer segmentation (label value 1, layer 0)."""
    hits = np.argwhere(np.asarray(mask) > 0)
    if hits.size:
        lo, hi = hits.min(0), hits.max(0)
        extent = " ".join(f"{a} {b}" for a, b in zip(lo, hi))
    else:  # Slicer's way of saying "empty"
        extent = "0 -1 0 -1 0 -1"
    return {
        "Segment0_ID": "clot",
        "Segment0_Name": name,
        "Segment0_NameAutoGenerated": "0",
        "Segment0_Color": " ".join(f"{c:.6g}" for c in color),
        "Segment0_ColorAutoGenerated": "0",
        "Segment0_LabelValue": "1",
        "Segment0_Layer": "0",
        "Segment0_Extent": extent,
        "Segment0_Tags": f"TerminologyEntry:{CLOT_TERMINOLOGY}|",
        "Segmentation_MasterRepresentation": "Binary labelmap",
        "Segmentation_ContainedRepresentationNames": "Binary labelmap|",
        "Segmentation_ReferenceImageExtentOffset": "0 0 0",
    }


def write_seg_nrrd(mask: Volume, path: str | Path, *, name: str = "clot") -> Path:
    """Write a binary mask (anything > 0 is clot) as a one-segment ``.seg.nrrd``
    atomically, on exactly the mask's grid."""
    import SimpleITK as sitk

    path = Path(path)
    binary = (np.asarray(mask.array) > 0).astype(np.uint8)
    image = mask.with_array(binary).to_sitk()
    for key, value in seg_nrrd_metadata(binary, name=name).items():
        image.SetMetaData(key, value)
    with atomic_path(path) as tmp:
        sitk.WriteImage(image, str(tmp), useCompression=True)
    return path
