"""Shareable models: a trained run as one ``model.zip``, or as ONNX.

``model.zip`` holds exactly what ``predict`` needs and nothing about the patients it was
trained on:

* ``model.json`` (architecture, input windows, pre- and post-processing),
* ``checkpoints/best.pt`` (the best weights only: no optimiser state, no RNG state),
* ``config.yaml`` (the resolved training settings, with paths such as the splits file
  and the cache folder removed),
* ``checksums.json`` (SHA-256 of each of those files).

No cache, no ``splits.json``, no logs (which name cases). Reading a zip checks that it
holds only those names (no absolute paths, no ``..``: a crafted archive cannot write
outside its folder), verifies every checksum, and unpacks into a private temporary
folder that is removed when the process ends. The weights are then loaded like a run's,
with ``torch.load(..., weights_only=True)``.

``model.onnx`` is the network alone (input ``(batch, 2*slab, H, W)``, output logits,
dynamic batch and slice size) with ``model.json`` stored in the ONNX metadata under
``clotseg_model_json``, so that an ONNX file too is self-contained for ``predict``.
"""

from __future__ import annotations

import atexit
import hashlib
import io
import json
import shutil
import tempfile
import zipfile
from pathlib import Path

from clotseg.errors import ClotsegError
from clotseg.io.atomic import atomic_path
from clotseg.runs import CHECKPOINTS, CONFIG_YAML, MODEL_JSON, Run

CHECKSUMS = "checksums.json"
WEIGHTS = f"{CHECKPOINTS}/best.pt"
ZIP_FILES = (MODEL_JSON, WEIGHTS, CONFIG_YAML, CHECKSUMS)
#: Most bytes a model zip may unpack to, as its directory declares them (zipfile reads no
#: more than declared): the largest model here is tens of MB, and a zip of a few KB can
#: declare gigabytes, which would all be read into memory.
MAX_UNPACKED_BYTES = 1 << 30
ONNX_META_KEY = "clotseg_model_json"
ONNX_OPSET = 17
#: Checkpoint entries kept in an exported model (the rest is for resuming training).
_WEIGHT_KEYS = ("model", "model_name", "model_kwargs", "epoch")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _weights_bytes(run: Path) -> bytes:
    """The best weights of ``run`` without the state kept only for resuming training."""
    import torch

    state = Run(run).load_checkpoint("best")
    buf = io.BytesIO()
    torch.save({k: state[k] for k in _WEIGHT_KEYS if k in state}, buf)
    return buf.getvalue()


def _config_bytes(run: Path) -> bytes:
    """The run's resolved settings without anything that points at files or cases."""
    import yaml

    from clotseg.io import yamlsafe

    path = Run(run).config_path
    if not path.is_file():
        return b"{}\n"
    try:
        cfg = yamlsafe.load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ClotsegError(f"{path}: not valid YAML ({exc})") from None
    for section in cfg.values() if isinstance(cfg, dict) else ():
        if isinstance(section, dict):
            for key in list(section):
                if key == "splits" or "dir" in key or "path" in key:
                    section[key] = None
    return yamlsafe.dump(cfg, sort_keys=False).encode()


def export_zip(run: str | Path, out: str | Path) -> Path:
    """Write ``out`` (a ``.zip``) from a trained run folder, atomically."""
    run = Path(run)
    spec = Run(run).read_spec()
    files = {MODEL_JSON: spec.to_json().encode(), WEIGHTS: _weights_bytes(run),
             CONFIG_YAML: _config_bytes(run)}
    files[CHECKSUMS] = json.dumps({n: sha256(b) for n, b in files.items()}, indent=2).encode()
    out = Path(out)
    with atomic_path(out) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return out


def is_model_zip(path: str | Path) -> bool:
    p = Path(path)
    return p.is_file() and p.suffix.lower() == ".zip"


def _safe_name(name: str) -> bool:
    parts = name.split("/")
    return (not name.startswith(("/", "\\")) and "\\" not in name and ":" not in name
            and ".." not in parts and name in ZIP_FILES)


def unpack_model_zip(path: str | Path) -> Path:
    """Check and unpack an exported ``model.zip``; returns a run folder (temporary)."""
    path = Path(path)
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ClotsegError(f"{path}: not a clotseg model zip ({exc})") from None
    with zf:
        names = [i.filename for i in zf.infolist() if not i.is_dir()]
        bad = [n for n in names if not _safe_name(n)]
        if bad:
            raise ClotsegError(f"{path}: unexpected entry {bad[0]!r} in model zip (only "
                               f"{', '.join(ZIP_FILES)}); refusing to unpack it")
        size = sum(i.file_size for i in zf.infolist())
        if size > MAX_UNPACKED_BYTES:
            raise ClotsegError(f"{path}: model zip unpacks to {size / 2**20:.0f} MiB, above "
                               f"the {MAX_UNPACKED_BYTES / 2**20:.0f} MiB a model needs; "
                               "refusing to unpack it")
        missing = [n for n in ZIP_FILES if n not in names]
        if missing:
            raise ClotsegError(f"{path}: not a clotseg model zip ({missing[0]} missing)")
        data = {n: zf.read(n) for n in ZIP_FILES}
    try:
        sums = json.loads(data[CHECKSUMS])
    except ValueError:
        raise ClotsegError(f"{path}: {CHECKSUMS} is not valid JSON") from None
    for name in ZIP_FILES[:-1]:
        if not isinstance(sums, dict) or sums.get(name) != sha256(data[name]):
            raise ClotsegError(f"{path}: checksum of {name} does not match (damaged or "
                               "altered file)")
    folder = Path(tempfile.mkdtemp(prefix="clotseg-model-"))
    atexit.register(shutil.rmtree, folder, True)
    for name in ZIP_FILES:
        target = folder / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data[name])
    return folder


def model_folder(run: str | Path) -> Path:
    """A run folder for ``run``: itself, or an exported ``model.zip`` unpacked."""
    return unpack_model_zip(run) if is_model_zip(run) else Path(run)


# --- ONNX ---------------------------------------------------------------------------------


def onnx_bytes(run: str | Path) -> bytes:
    """The network of a run (folder or ``model.zip``) as an ONNX model, with model.json in
    its metadata (module docstring)."""
    import warnings

    import torch

    try:
        import onnx
    except ImportError:
        raise ClotsegError("ONNX export needs onnx: pip install 'clotseg[onnx]'") from None
    model, spec = Run(model_folder(run)).load_model(device="cpu")
    side = 4 * spec.pad_multiple
    x = torch.zeros(1, 2 * spec.slab, side, side)
    buf = io.BytesIO()
    axes = {0: "batch", 2: "height", 3: "width"}
    with warnings.catch_warnings():
        # The TorchScript-based exporter handles these plain convolutional networks and
        # needs nothing beyond onnx; torch 2.9+ warns that it is no longer the default.
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), buf, input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": axes, "logits": axes},
                          opset_version=ONNX_OPSET, dynamo=False)
    proto = onnx.load_from_string(buf.getvalue())
    entry = proto.metadata_props.add()
    entry.key, entry.value = ONNX_META_KEY, spec.to_json()
    onnx.checker.check_model(proto)
    return proto.SerializeToString()


def export_onnx(run: str | Path, out: str | Path) -> Path:
    """Write ``out`` (``.onnx``) from a run folder or ``model.zip``, atomically."""
    from clotseg.io.atomic import write_bytes

    return write_bytes(out, onnx_bytes(run))
