"""Running an exported network with onnxruntime (``predict --engine onnx``; optional:
``pip install clotseg[onnx]``).

:class:`OnnxNet` behaves like the torch module the slice engine expects (called with a
``(B, C, H, W)`` float tensor, returns logits as a tensor), so batching, TTA, skipping
empty input and mapping back onto the CTA grid are the very code torch uses
(:func:`clotseg.inference.engine.predict_probabilities`). onnxruntime runs on the CPU.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from clotseg.errors import ClotsegError
from clotseg.runs import ModelSpec


class OnnxNet:
    """An onnxruntime session with the calling convention of a torch module."""

    def __init__(self, model: bytes | str | Path, num_threads: int | None = None):
        try:
            import onnxruntime as ort
        except ImportError:
            raise ClotsegError("--engine onnx needs onnxruntime: pip install "
                               "'clotseg[onnx]'") from None
        opts = ort.SessionOptions()
        if num_threads:
            opts.intra_op_num_threads = int(num_threads)
            opts.inter_op_num_threads = 1
        source = model if isinstance(model, bytes) else str(model)
        try:
            self.session = ort.InferenceSession(source, opts,
                                                providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own types
            where = "" if isinstance(model, bytes) else f"{model}: "
            raise ClotsegError(f"{where}not a usable ONNX model "
                               f"({str(exc).splitlines()[0][:200]})") from None
        self.input_name = self.session.get_inputs()[0].name
        # a volumetric network marks every input slice (set from the model's settings by
        # load_onnx: the exported graph leaves its output channel count symbolic)
        self.volumetric = False

    def eval(self) -> OnnxNet:
        return self

    def __call__(self, x):
        import torch

        array = np.ascontiguousarray(x.detach().float().cpu().numpy())
        (logits,) = self.session.run(None, {self.input_name: array})
        return torch.from_numpy(logits)


def spec_from_onnx(path: str | Path) -> ModelSpec:
    """The ``model.json`` stored in an exported ONNX file's metadata."""
    import json

    from clotseg.model_export import ONNX_META_KEY

    try:
        import onnx
    except ImportError:
        raise ClotsegError("reading ONNX models needs onnx: pip install 'clotseg[onnx]'"
                           ) from None
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - protobuf decode errors and the like
        raise ClotsegError(f"{path}: not an ONNX model ({str(exc).splitlines()[0][:200]})"
                           ) from None
    meta = {p.key: p.value for p in proto.metadata_props}
    if ONNX_META_KEY not in meta:
        raise ClotsegError(f"{path}: ONNX model without clotseg settings (export it with "
                           "`clotseg export RUN --onnx FILE`)")
    try:
        return ModelSpec.from_dict(json.loads(meta[ONNX_META_KEY]))
    except (ValueError, TypeError) as exc:
        raise ClotsegError(f"{path}: invalid clotseg settings in ONNX metadata ({exc})"
                           ) from None


def load_onnx(run: str | Path, num_threads: int | None = None) -> tuple[OnnxNet, ModelSpec]:
    """An :class:`OnnxNet` and its settings from a ``.onnx`` file, or (exported on the
    fly) from a run folder or ``model.zip``."""
    from clotseg.model_export import model_folder, onnx_bytes
    from clotseg.models import VOLUMETRIC_MODELS
    from clotseg.runs import load_model_spec

    path = Path(run)
    if path.suffix.lower() == ".onnx":
        if not path.is_file():
            raise ClotsegError(f"{path}: ONNX model file does not exist")
        net, spec = OnnxNet(path, num_threads), spec_from_onnx(path)
    else:
        folder = model_folder(path)
        net, spec = OnnxNet(onnx_bytes(folder), num_threads), load_model_spec(folder)
    net.volumetric = spec.model_name in VOLUMETRIC_MODELS
    return net, spec
