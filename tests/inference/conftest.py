"""Test networks, run folders and cases with a known clot for the prediction tests.

``test-paint`` is a stub network whose logits are +10 where the centre CTA channel is
above a level and −10 elsewhere, so a mask painted into the CTA (bright voxels) comes back
exactly through the whole predict path. With ``need_above=True`` it also requires the
next slice of the slab (one step towards the patient's head) to be bright, which shows
whether slabs run along the patient's superior axis.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from clotseg.io.readers import write_volume
from clotseg.io.volume import Volume
from clotseg.models import register_model
from clotseg.runs import ModelSpec, save_model_spec

#: HU of painted clot voxels in the CTA, and the normalised level the stub detects
#: (default CTA window −20..300 HU: 600 HU → 1.0, background ≤ 200 HU → ≤ 0.69).
PAINT_HU = 600.0
PAINT_LEVEL = 0.75


class PaintNet(nn.Module):
    """``modality``: which block's centre channel is read: ``cta`` (default), ``ncct``, or
    ``any`` (either above the level: one network for CTA-only and NCCT-only cases)."""

    def __init__(self, in_channels: int = 2, level: float = PAINT_LEVEL,
                 need_above: bool = False, modality: str = "cta"):
        super().__init__()
        self.slab = in_channels // 2
        self.level = level
        self.need_above = need_above
        self.blocks = {"cta": [0], "ncct": [1], "any": [0, 1]}[modality]
        self.register_buffer("scale", torch.tensor(10.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hit = torch.zeros_like(x[:, :1], dtype=torch.bool)
        for b in self.blocks:
            c = b * self.slab + self.slab // 2
            block = x[:, c:c + 1] > self.level
            if self.need_above:
                block = block & (x[:, c + 1:c + 2] > self.level)
            hit = hit | block
        return torch.where(hit, self.scale, -self.scale)


class ConstNet(nn.Module):
    """Constant logit everywhere (for checking that ensembles average probabilities)."""

    def __init__(self, in_channels: int = 2, logit: float = 0.0):
        super().__init__()
        self.logit = nn.Parameter(torch.tensor(float(logit)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logit.expand(x.shape[0], 1, *x.shape[2:]) + 0 * x[:, :1]


class TinyNet(nn.Module):
    """A small conv/batch-norm network with a pooling level (random weights)."""

    def __init__(self, in_channels: int = 2, width: int = 4):
        super().__init__()
        self.enc = nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1, bias=False),
                                 nn.BatchNorm2d(width), nn.ReLU())
        self.down = nn.Sequential(nn.MaxPool2d(2), nn.Conv2d(width, width, 3, padding=1),
                                  nn.BatchNorm2d(width), nn.ReLU())
        self.head = nn.Conv2d(2 * width, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.enc(x)
        b = nn.functional.interpolate(self.down(a), size=a.shape[-2:], mode="nearest")
        return self.head(torch.cat([a, b], 1))


register_model("test-paint")(PaintNet)
register_model("test-const")(ConstNet)
register_model("test-tiny")(TinyNet)


def tiny_net(in_channels: int = 2, seed: int = 0) -> TinyNet:
    """TinyNet with random weights and non-trivial batch-norm statistics, in eval mode."""
    torch.manual_seed(seed)
    net = TinyNet(in_channels)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.3, 0.3)
    return net.eval()


def write_run(run: Path, model_name: str, model_kwargs: dict | None = None,
              state: dict | None = None, **spec) -> Path:
    """A RUN folder as ``clotseg train`` leaves it (model.json + checkpoints/best.pt)."""
    from clotseg.models import create_model

    model_kwargs = model_kwargs or {}
    spec.setdefault("min_component_mm3", 0.0)
    save_model_spec(run, ModelSpec(model_name, model_kwargs, **spec))
    if state is None:
        state = create_model(model_name, **model_kwargs).state_dict()
    (run / "checkpoints").mkdir(parents=True, exist_ok=True)
    torch.save({"model": state, "model_name": model_name, "model_kwargs": model_kwargs,
                "epoch": 0}, run / "checkpoints" / "best.pt")
    return run


def paint_mask(shape) -> np.ndarray:
    """Two clots well inside the volume: an asymmetric L-shaped one (a wrong flip or
    transpose cannot map it onto itself) and a small separate blob."""
    m = np.zeros(shape, dtype=np.uint8)
    cx, cy, cz = (s // 2 for s in shape)
    m[cx - 4:cx + 3, cy - 1:cy + 1, cz - 2:cz + 2] = 1  # long arm along axis 0
    m[cx - 4:cx - 2, cy - 1:cy + 5, cz - 2:cz + 2] = 1  # short arm along axis 1
    m[cx - 3:cx - 2, cy - 1:cy, cz + 2:cz + 4] = 1  # a bump along axis 2
    m[1:3, 1:3, 1:3] = 1  # separate small blob (8 voxels)
    return m


def case_volumes(mask: np.ndarray, direction, spacing=(0.45, 0.6, 1.7),
                 origin=(-12.5, 30.25, 7.0), seed: int = 0) -> tuple[Volume, Volume]:
    """(CTA, NCCT) int16 volumes; clot voxels are bright in the CTA."""
    rng = np.random.default_rng(seed)
    cta = rng.normal(80, 40, mask.shape).clip(-50, 200)
    cta[mask > 0] = PAINT_HU
    ncct = rng.normal(35, 8, mask.shape)
    d = np.asarray(direction, dtype=float).ravel()
    return (Volume(cta.astype(np.int16), spacing, origin, d),
            Volume(ncct.astype(np.int16), spacing, origin, d))


def write_case(folder: Path, cta: Volume | None, ncct: Volume | None, fmt: str = ".nii.gz"
               ) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    if cta is not None:
        write_volume(cta, folder / f"cta{fmt}")
    if ncct is not None:
        write_volume(ncct, folder / f"ncct{fmt}")
    return folder


@pytest.fixture
def paint_run(tmp_path) -> Path:
    """A run whose network returns the painted clot (slab 1)."""
    return write_run(tmp_path / "run_paint", "test-paint", {"in_channels": 2})


def write_dicom_series(folder: Path, vol: Volume, description: str,
                       patient_id: str | None = None) -> str:
    """Write an int16 volume as a CT DICOM series (one file per slice); returns its UID."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    d = np.asarray(vol.direction, dtype=float).reshape(3, 3)
    uid, study = generate_uid(), generate_uid()
    arr = np.asarray(vol.array, dtype=np.int16)
    for k in range(arr.shape[2]):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID = CTImageStorage
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, uid
        ds.Modality, ds.SeriesDescription, ds.InstanceNumber = "CT", description, k + 1
        if patient_id is not None:
            ds.PatientID = patient_id
        pos = np.asarray(vol.origin) + k * vol.spacing[2] * d[:, 2]
        ds.ImagePositionPatient = [f"{v:.6f}" for v in pos]
        ds.ImageOrientationPatient = [f"{v:.8f}" for v in (*d[:, 0], *d[:, 1])]
        ds.PixelSpacing = [f"{vol.spacing[1]:.6f}", f"{vol.spacing[0]:.6f}"]
        ds.Rows, ds.Columns = arr.shape[1], arr.shape[0]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleSlope, ds.RescaleIntercept = "1", "0"
        ds.PixelData = np.ascontiguousarray(arr[:, :, k].T).tobytes()
        ds.save_as(folder / f"slice{k:03d}.dcm", enforce_file_format=True)
    return uid
