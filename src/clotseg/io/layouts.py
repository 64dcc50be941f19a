"""Dataset layouts, detected automatically, behind one lazy case index.

These layouts are read:

* **case folders** — ``DATA/<case>/cta.*``, ``ncct.*``, optional ``clot.*`` (any volume
  format, or a 3D Slicer ``clot.seg.nrrd``) or ``cta/`` / ``ncct/`` DICOM series folders.
  A single case folder works too.
* **nnU-Net raw** — ``imagesTr/<case>_0000.*`` (CTA), ``<case>_0001.*`` (NCCT),
  ``labelsTr/<case>.*``, ``dataset.json``; ``imagesTs/`` for cases without labels. The
  channel numbers follow ``channel_names`` (:func:`nnunet_channels`).
* **original research** — ``DL_vol_files/binary/<case>_CTA_Binary.npy``,
  ``<case>_NCCT_Reg_Binary.npy``, ``DL_seg_files/binary/<case>_seg_corrected_binary.npy``.
  Spacing is unknown there: 1 mm is assumed unless the caller gives one (with a warning).

Nothing is loaded at discovery time; :meth:`CaseRef.load` reads one case on demand.
"""

from __future__ import annotations

import json
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from clotseg.errors import DatasetError
from clotseg.io.readers import read_volume, strip_suffix, volume_suffix
from clotseg.io.slicer import is_seg_nrrd, read_seg_nrrd, seg_stem
from clotseg.io.volume import Volume

MODALITIES = ("cta", "ncct")
#: Names of the mask file in a case folder (any volume format, or a 3D Slicer
#: ``.seg.nrrd``; "segmentation" is the name Slicer gives a new segmentation).
MASK_NAMES = ("clot", "mask", "seg", "label", "segmentation")


@dataclass(frozen=True)
class CaseVolumes:
    """The loaded volumes of one case (``mask`` is None when the case has none).

    At most one of ``cta`` and ``ncct`` is None: a one-modality case, which ``predict``
    accepts (the model sees the absent scan as "missing", see
    :data:`clotseg.data.slabs.MISSING_VALUE`) and training refuses.
    """

    case_id: str
    cta: Volume | None
    ncct: Volume | None
    mask: Volume | None

    @property
    def reference(self) -> Volume:
        """The volume whose grid masks are written on: the CTA, or the NCCT without one."""
        ref = self.cta if self.cta is not None else self.ncct
        if ref is None:  # discovery makes a case with neither a problem; never loaded
            raise DatasetError(f"case {self.case_id}: neither a CTA nor an NCCT")
        return ref

    @property
    def inputs(self) -> tuple[str, ...]:
        """The modalities present, in :data:`MODALITIES` order (``("cta", "ncct")`` etc.)."""
        return tuple(m for m in MODALITIES if getattr(self, m) is not None)


@dataclass(frozen=True)
class CaseRef:
    """Where one case's files are; loads them only when asked."""

    case_id: str
    cta: Path | None
    ncct: Path | None
    mask: Path | None = None
    spacing: tuple[float, float, float] | None = None  # only for .npy (no stored geometry)
    problems: tuple[str, ...] = ()  # "path: reason" found at discovery (no scan at all)

    @property
    def inputs(self) -> tuple[str, ...]:
        """The modalities this case has files for, in :data:`MODALITIES` order."""
        return tuple(m for m in MODALITIES if getattr(self, m) is not None)

    @property
    def missing(self) -> tuple[str, ...]:
        """The modalities this case lacks (one at most for a usable case)."""
        return tuple(m for m in MODALITIES if getattr(self, m) is None)

    @property
    def reference_path(self) -> Path | None:
        """The file or folder of the scan masks are written on (CTA, else NCCT)."""
        return self.cta if self.cta is not None else self.ncct

    @property
    def orientation_known(self) -> bool:
        """Whether every scan's file says how it lies in the patient
        (:func:`clotseg.io.readers.orientation_known`): only then is a side named."""
        from clotseg.io.readers import orientation_known

        return all(orientation_known(p) for p in (self.cta, self.ncct) if p is not None)

    @property
    def files(self) -> dict[str, Path]:
        return {k: v for k, v in (("cta", self.cta), ("ncct", self.ncct),
                                  ("mask", self.mask)) if v is not None}

    def read(self, which: str) -> Volume:
        """Read one of ``cta``, ``ncct``, ``mask``."""
        path = self.files.get(which)
        if path is None:
            raise DatasetError(f"case {self.case_id}: no {which} file")
        if path.is_dir() and which in MODALITIES:  # a DICOM folder: this modality's series
            from clotseg.io.dicom import read_dicom_series

            return read_dicom_series(path, kind=which)
        if is_seg_nrrd(path):  # 3D Slicer segmentation: its clot segment as 0/1
            return read_seg_nrrd(path)
        return read_volume(path, spacing=self.spacing)

    def load(self, *, with_mask: bool = True) -> CaseVolumes:
        """Read CTA, NCCT and (if present and wanted) the mask, with their values checked
        for use (:mod:`clotseg.io.values`: finite, non-constant CT voxels, a binary
        mask). A modality the case has no file for is None (see :class:`CaseVolumes`)."""
        from clotseg.io.values import binary_mask, distinct_scans

        if self.problems:
            raise DatasetError(f"case {self.case_id}: {'; '.join(self.problems)}")
        mask = None
        if with_mask and self.mask is not None:
            mask = binary_mask(self.read("mask"), self.mask)
        cta, ncct = self._scan("cta"), self._scan("ncct")
        distinct_scans(cta, ncct, self.ncct)
        return CaseVolumes(self.case_id, cta, ncct, mask)

    def _scan(self, name: str) -> Volume | None:
        """One modality read and checked (finite, non-constant CT values), None without its
        file."""
        from clotseg.io.values import usable_ct

        path = getattr(self, name)
        return None if path is None else usable_ct(self.read(name), path, name.upper())


@dataclass
class DatasetIndex:
    """Cases of a dataset in one of the supported layouts, in sorted order."""

    root: Path
    layout: str
    cases: list[CaseRef]
    problems: list[str] = field(default_factory=list)  # dataset-level problems

    def __len__(self) -> int:
        return len(self.cases)

    def __iter__(self):
        return iter(self.cases)

    def __getitem__(self, case_id: str) -> CaseRef:
        for c in self.cases:
            if c.case_id == case_id:
                return c
        raise KeyError(case_id)

    @property
    def case_ids(self) -> list[str]:
        return [c.case_id for c in self.cases]

    def subset(self, case_ids) -> DatasetIndex:
        wanted = set(case_ids)
        return DatasetIndex(self.root, self.layout,
                            [c for c in self.cases if c.case_id in wanted], list(self.problems))


def discover(root: str | Path, *, spacing: tuple[float, float, float] | None = None,
             layout: str | None = None) -> DatasetIndex:
    """Detect the layout of ``root`` and index its cases (nothing is read yet)."""
    root = Path(root)
    if not root.exists():
        raise DatasetError(f"{root}: dataset folder does not exist")
    if not root.is_dir():
        raise DatasetError(f"{root}: not a folder (give a dataset or case folder)")
    layout = layout or detect_layout(root)
    if layout == "nnunet":
        return _discover_nnunet(root)
    if layout == "original":
        return _discover_original(root, spacing)
    if layout == "case":
        return DatasetIndex(root, "case", [_case_from_folder(root, root.name)])
    if layout == "folders":
        return _discover_folders(root)
    if layout == "dicom":
        return _discover_dicom(root)
    raise DatasetError(f"{root}: unknown layout {layout!r}")


def detect_layout(root: Path) -> str:
    """One of ``nnunet``, ``original``, ``case`` (a single case folder), ``folders`` or
    ``dicom`` (exported DICOM series without cta/ncct folder names)."""
    if (root / "imagesTr").is_dir() or (root / "imagesTs").is_dir():
        return "nnunet"
    if (root / "DL_vol_files").is_dir():
        return "original"
    if any(_modality_entry(root, m) is not None for m in MODALITIES):  # one scan is a case
        return "case"
    subdirs = [d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")]
    if any(_modality_entry(d, m) is not None for d in subdirs for m in MODALITIES):
        return "folders"
    from clotseg.io.dicom import holds_dicom

    if holds_dicom(root):
        return "dicom"
    raise DatasetError(
        f"{root}: no dataset found (expected <case>/cta.nii.gz + ncct.nii.gz folders, an "
        "nnU-Net imagesTr/ folder, or the original DL_vol_files/binary/*.npy layout)")


def _modality_entry(folder: Path, name: str) -> Path | None:
    """``folder/name.<ext>`` or a ``folder/name/`` DICOM folder, if present."""
    hits = _modality_entries(folder, name)
    return hits[0] if hits else None


def _modality_entries(folder: Path, name: str) -> list[Path]:
    """Every ``folder/name.<ext>`` file and ``folder/name/`` folder (sorted)."""
    if not folder.is_dir():
        return []
    hits = []
    for p in folder.iterdir():
        if p.name.startswith("."):
            continue
        if p.is_dir() and p.name.lower() == name:
            hits.append(p)
        elif p.is_file() and volume_suffix(p) and _stem(p).lower() == name:
            hits.append(p)
    return sorted(hits)


def _stem(path: Path) -> str:
    """File name without its volume suffix; ``clot.seg.nrrd`` (3D Slicer) -> ``clot``."""
    return seg_stem(path) if is_seg_nrrd(path) else strip_suffix(path)


def _case_from_folder(folder: Path, case_id: str) -> CaseRef:
    cta = _modality_entry(folder, "cta")
    ncct = _modality_entry(folder, "ncct")
    mask = next((m for m in (_modality_entry(folder, n) for n in MASK_NAMES) if m), None)
    problems = []
    for what, names in (("CTA", ("cta",)), ("NCCT", ("ncct",)), ("mask", MASK_NAMES)):
        found = [p for n in names for p in _modality_entries(folder, n)]
        if len(found) > 1:  # never pick one of them silently
            problems.append(f"{found[0]}: more than one {what} in the case folder "
                            f"({', '.join(p.name for p in found)}); keep only one")
    for p in sorted(folder.iterdir()) if folder.is_dir() else []:
        if (p.is_dir() and volume_suffix(p) and not p.name.startswith(".")
                and strip_suffix(p).lower() in ("cta", "ncct", *MASK_NAMES)):
            problems.append(f"{p}: a folder named like a volume file; expected a file "
                            f"(or a DICOM folder named {strip_suffix(p)}/)")
    if cta is None and ncct is None:  # one of them alone is a one-modality case
        problems.append(f"{folder}: neither a CTA nor an NCCT (no cta.* / ncct.* file or "
                        "cta/ / ncct/ DICOM folder)")
    return CaseRef(case_id, cta, ncct, mask, problems=tuple(problems))


def _discover_folders(root: Path) -> DatasetIndex:
    cases, problems = [], []
    for d in sorted(p for p in root.iterdir() if p.is_dir()):
        if any(_modality_entry(d, m) for m in MODALITIES) or any(
                _modality_entry(d, n) for n in MASK_NAMES):
            if d.name.startswith("."):  # hidden: reported, never used or dropped silently
                problems.append(f"{d}: case folder name starts with '.', so it is hidden "
                                "and skipped; rename it to use it")
                continue
            cases.append(_case_from_folder(d, d.name))
    return DatasetIndex(root, "folders", cases, problems)


def _discover_dicom(root: Path) -> DatasetIndex:
    """DICOM as a scanner or PACS exports it (series folders at any depth, no cta/ncct
    names). Series of one patient make one case, named after ``root``; series with
    several PatientIDs make one case per first-level subfolder. Without patient IDs
    (some anonymised exports) everything under ``root`` is one case: CTA and NCCT often
    carry different study UIDs, so those cannot tell patients apart.
    The CTA and NCCT of a case are told apart when read, by series description
    (:func:`clotseg.io.dicom.select_series`); ``predict --cta-series/--ncct-series``
    chooses explicitly."""
    from clotseg.io.dicom import find_series, holds_dicom

    patients = {s.patient for s in find_series(root) if s.modality.upper() == "CT"} - {""}
    if len(patients) <= 1:
        return DatasetIndex(root, "dicom", [CaseRef(root.name, root, root)])
    subdirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    cases = [CaseRef(d.name, d, d) for d in subdirs if holds_dicom(d)]
    return DatasetIndex(root, "dicom", cases)


_NNUNET_RE = re.compile(r"^(?P<case>.+)_(?P<ch>\d{4})$")


def _discover_nnunet(root: Path) -> DatasetIndex:
    problems: list[str] = []
    channels = nnunet_channels(root / "dataset.json")
    cases: list[CaseRef] = []
    for images, labels in (("imagesTr", "labelsTr"), ("imagesTs", "labelsTs")):
        img_dir = root / images
        if not img_dir.is_dir():
            continue
        found: dict[str, dict[str, Path]] = {}
        for p in sorted(img_dir.iterdir()):
            if not (p.is_file() and volume_suffix(p)):
                continue
            m = _NNUNET_RE.match(strip_suffix(p))
            if not m:
                problems.append(f"{p}: name does not end in _0000/_0001 (channel number)")
                continue
            ch = str(int(m["ch"]))
            if ch not in channels:
                if ch not in _other_channels(root / "dataset.json", channels):
                    problems.append(f"{p}: unexpected channel {m['ch']} (dataset.json names "
                                    f"only {_channel_text(channels)})")
                continue
            found.setdefault(m["case"], {})[channels[ch]] = p
        for case_id, mods in sorted(found.items()):
            lab = _find_by_stem(root / labels, case_id)
            number = {m: int(ch) for ch, m in channels.items()}
            # one channel alone is a one-modality case (CaseRef.missing), not a problem
            missing = [f"{img_dir}/{case_id}_{number['cta']:04d}.*: neither a CTA nor an "
                       "NCCT file"] if not mods else []
            cases.append(CaseRef(case_id, mods.get("cta"), mods.get("ncct"), lab,
                                 problems=tuple(missing)))
    return DatasetIndex(root, "nnunet", cases, problems)


#: How a channel name says which modality it is (lower case, whole words or parts).
_CHANNEL_WORDS = {
    "ncct": re.compile(r"ncct|non[- ]?contrast|noncon|plain|native|unenhanced|\bw/?o\b"),
    "cta": re.compile(r"cta|angio"),
}


def _channel_kind(name: str) -> str | None:
    """"cta", "ncct", "ct" (a bare CT channel) or None for a name that is neither."""
    n = str(name).strip().lower()
    for kind, words in _CHANNEL_WORDS.items():  # ncct first: "CTA w/o" is not a CTA
        if words.search(n):
            return kind
    return "ct" if n in ("ct", "ct image", "ctimage") else None


def nnunet_channels(dataset_json: Path) -> dict[str, str]:
    """``{"0": "cta", "1": "ncct"}``: which nnU-Net channel number holds which modality,
    from ``channel_names`` (``modality`` in older datasets) of ``dataset.json``.

    Channels named CTA and NCCT are used by name, in any order. Two bare ``CT`` channels
    (what nnU-Net users usually write) mean 0 = CTA, 1 = NCCT, clotseg's own order. Without
    ``dataset.json`` that order is assumed too. Anything else is a :class:`DatasetError`
    naming the file: a guess could silently swap the modalities.
    """
    default = {"0": "cta", "1": "ncct"}
    if not dataset_json.is_file():
        return default
    try:
        data = json.loads(dataset_json.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DatasetError(f"{dataset_json}: not valid JSON ({exc})") from None
    names = data.get("channel_names", data.get("modality")) if isinstance(data, dict) else None
    hint = ('name the channels {"0": "CTA", "1": "NCCT"} (or "CT", "CT" for 0 = CTA, '
            '1 = NCCT)')
    if not isinstance(names, dict) or not names:
        raise DatasetError(f"{dataset_json}: no channel_names, so which channel is the CTA "
                           f"and which the NCCT is unknown; {hint}")
    kinds = {str(int(k)) if str(k).isdigit() else str(k): _channel_kind(v)
             for k, v in names.items()}
    cta = [k for k, v in kinds.items() if v == "cta"]
    ncct = [k for k, v in kinds.items() if v == "ncct"]
    if len(cta) == 1 and len(ncct) == 1:
        return {cta[0]: "cta", ncct[0]: "ncct"}
    if sorted(kinds) == ["0", "1"] and all(v == "ct" for v in kinds.values()):
        return default
    raise DatasetError(f"{dataset_json}: channel_names {names} do not say which channel is "
                       f"the CTA and which the NCCT; {hint}")


def _other_channels(dataset_json: Path, used: dict[str, str]) -> set[str]:
    """Channel numbers that dataset.json declares but clotseg does not use."""
    try:
        names = json.loads(dataset_json.read_text()).get("channel_names", {})
        return {str(int(k)) for k in names} - set(used)
    except (OSError, ValueError, AttributeError, TypeError):
        return set()


def _channel_text(channels: dict[str, str]) -> str:
    return ", ".join(f"{int(k):04d}={v.upper()}" for k, v in sorted(channels.items()))


def _find_by_stem(folder: Path, stem: str) -> Path | None:
    if not folder.is_dir():
        return None
    for p in sorted(folder.iterdir()):
        if p.is_file() and volume_suffix(p) and strip_suffix(p) == stem:
            return p
    return None


_ORIG_CTA = re.compile(r"^(?P<case>.+)_CTA_Binary\.npy$")


def _discover_original(root: Path, spacing: tuple[float, float, float] | None) -> DatasetIndex:
    vol_dir = root / "DL_vol_files" / "binary"
    seg_dir = root / "DL_seg_files" / "binary"
    if spacing is None:
        warnings.warn(f"{root}: original .npy layout stores no voxel spacing; assuming 1 mm "
                      "isotropic (give --spacing X Y Z to set it)", UserWarning, stacklevel=2)
        spacing = (1.0, 1.0, 1.0)
    cases = []
    if not vol_dir.is_dir():
        raise DatasetError(f"{vol_dir}: folder missing (original layout expects "
                           "DL_vol_files/binary/<case>_CTA_Binary.npy)")
    ids = sorted({m["case"] for p in vol_dir.iterdir() if (m := _ORIG_CTA.match(p.name))}
                 | {p.name[: -len("_NCCT_Reg_Binary.npy")] for p in vol_dir.iterdir()
                    if p.name.endswith("_NCCT_Reg_Binary.npy")}, key=_natural_key)
    for case_id in ids:
        cta = vol_dir / f"{case_id}_CTA_Binary.npy"
        ncct = vol_dir / f"{case_id}_NCCT_Reg_Binary.npy"
        seg = seg_dir / f"{case_id}_seg_corrected_binary.npy"
        # one file alone is a one-modality case (CaseRef.missing), not a problem
        problems = [] if cta.is_file() or ncct.is_file() else [
            f"{cta}: neither a CTA nor an NCCT file"]
        cases.append(CaseRef(case_id, cta if cta.is_file() else None,
                             ncct if ncct.is_file() else None,
                             seg if seg.is_file() else None, spacing, tuple(problems)))
    return DatasetIndex(root, "original", cases)


def _natural_key(s: str):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s)]
