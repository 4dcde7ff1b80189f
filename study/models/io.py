"""Loading and saving models as plain Hugging Face folders (safetensors + config + processor)."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForImageTextToText

from study.models.device import resolve_device, resolve_dtype, stored_dtype
from study.models.processing import load_processor
from study.outputs import atomic_folder
from study.records import PRUNING_FILE, read_record


def require_model_folder(path: str | Path) -> Path:
    """``path`` as a ``Path`` if it is a Hugging Face model folder whose weights can be read
    (``config.json``; the headers of its safetensors files), checked before any work that needs
    the model: ``FileNotFoundError`` without ``config.json``, ``ValueError`` naming a truncated or
    corrupt weights file."""
    path = Path(path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"not a Hugging Face model folder (no config.json): {path}")
    _check_weights(path)
    return path


def load_model(
    path: str | Path, device: str | torch.device | None = None, dtype: str | torch.dtype | None = "auto", in_memory: bool = False
):
    """Model and processor of a local HF folder; no checkpoint code is run (no trust_remote_code).

    ``device``: where the model goes (``"auto"``: CUDA if available, else the CPU; None: left on
    the CPU); ``dtype``: ``"auto"`` (the checkpoint's stored dtype), ``"float32"``, ``"bfloat16"``
    or ``"float16"`` (see :mod:`study.models.device`).

    ``in_memory``: read the weights into the process's own memory instead of memory-mapping the
    safetensors files (``from_pretrained``'s default). Pruning loads this way: a memory-mapped
    file stays mapped while any of its tensors lives (the vision tower's, the embeddings'), so
    every decoder weight read once stays resident beside the smaller copies that replace it; a
    weight read into memory is freed as soon as its slice replaces it.

    A width-pruned folder with different widths per layer (``"nonuniform"`` in its
    ``pruning.json``), which stock ``from_pretrained`` cannot load, is rebuilt here: the model is
    built from its config, each layer sliced to its recorded width, then the weights are loaded
    strictly."""
    path = require_model_folder(path)
    dtype = resolve_dtype(dtype)
    pruning = read_record(path, PRUNING_FILE) or {}
    if pruning.get("nonuniform"):
        model = _load_per_layer_widths(path, pruning["widths"], dtype)
    elif in_memory and any(path.glob("*.safetensors")):
        model = _load_in_memory(path, dtype)
    else:
        model = AutoModelForImageTextToText.from_pretrained(path, trust_remote_code=False, dtype=dtype)
    processor = load_processor(path)
    if device is not None:
        model.to(resolve_device(device))
    return model.eval(), processor


def _load_in_memory(path: Path, dtype: str | torch.dtype):
    """``from_pretrained`` of the folder's model class with its safetensors read tensor by tensor
    (``pread``) into ordinary memory: the peak stays one copy of the weights."""
    from safetensors import safe_open
    from transformers import GenerationConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING

    config = AutoConfig.from_pretrained(path, trust_remote_code=False)
    files = [safe_open(shard, framework="pt", device="cpu", backend="pread") for shard in sorted(path.glob("*.safetensors"))]
    lazy = {key: f.get_slice(key) for f in files for key in f.keys()}  # read when the loader takes each tensor
    model = MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING[type(config)].from_pretrained(None, config=config, state_dict=lazy, dtype=dtype)
    model.config.name_or_path = str(path)  # what from_pretrained records when given the folder
    if (path / "generation_config.json").is_file():  # from_pretrained reads it only from a folder it is given
        model.generation_config = GenerationConfig.from_pretrained(path)
    return model


def _check_weights(path: Path) -> None:
    """Raise ``ValueError`` naming the file if a safetensors file of the folder ``path`` cannot be
    opened (truncated by an interrupted copy, corrupt); reads the headers only."""
    from safetensors import SafetensorError, safe_open

    for shard in sorted(Path(path).glob("*.safetensors")):
        try:
            with safe_open(shard, framework="pt"):
                pass
        except (SafetensorError, OSError) as err:
            raise ValueError(f"cannot read the weights file {shard} (truncated or corrupt?): {err}") from err


def _load_per_layer_widths(path: Path, widths: list[dict], dtype: str | torch.dtype = "auto"):
    from safetensors.torch import load_file

    from study.models.architectures import attention_shape, decoder_spec
    from study.models.layers import decoder_layers, text_config
    from study.models.width import LayerWidths, prune_layer_width

    config = AutoConfig.from_pretrained(path, trust_remote_code=False)
    model = AutoModelForImageTextToText.from_config(config, dtype=stored_dtype(path) if dtype == "auto" else dtype)
    spec, shape = decoder_spec(model), attention_shape(model)
    intermediate = text_config(model).intermediate_size
    for layer, w in zip(decoder_layers(model), widths, strict=True):
        n_kv, per_group = len(w["kv_heads"]), len(w["q_heads"]) // len(w["kv_heads"])
        shape_only = LayerWidths(
            tuple(g * shape.group_size + j for g in range(n_kv) for j in range(per_group)),
            tuple(range(n_kv)),
            tuple(range(len(w["channels"]))),
        )
        prune_layer_width(layer, spec, shape, shape_only, intermediate)
    saved = {}
    for shard in sorted(path.glob("*.safetensors")):
        saved.update(load_file(shard))
    model.load_state_dict(_to_model_keys(model, saved), strict=True)
    return model


def _to_model_keys(model, saved: dict) -> dict:
    """Saved checkpoint keys -> the model's own keys: ``save_pretrained`` writes some models (LLaVA
    among them) under their legacy key names, which ``from_pretrained`` renames back on load."""
    from transformers.core_model_loading import revert_weight_conversion

    own = model.state_dict()
    by_tensor = {id(t): k for k, t in own.items()}
    as_saved = revert_weight_conversion(model, dict(own))
    mapping = {k: by_tensor.get(id(t)) for k, t in as_saved.items()}
    if None in mapping.values():
        raise ValueError(f"cannot map the saved weights of {type(model).__name__} back to its modules (a weight conversion merges tensors)")
    return {mapping.get(k, k): v for k, v in saved.items()}


def save_model(model, processor, out_dir: str | Path, state_dict: dict | None = None, dtype: torch.dtype | None = None) -> Path:
    """Write ``model`` as a plain HF folder (safetensors, config, processor files).

    ``state_dict``: the weights to write instead of ``model``'s own, e.g. the full state dict an
    ``accelerate`` run gathers from FSDP or ZeRO-3 shards (``accelerator.get_state_dict``), whose
    module only holds its shard; ``dtype``: store the floating-point weights in this dtype (and say
    so in ``config.json``), e.g. a student trained with fp32 master weights saved in the 16-bit
    dtype it came in."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if dtype is not None:
        state_dict = _cast_floats(state_dict if state_dict is not None else model.state_dict(), dtype)
    model.save_pretrained(out_dir, state_dict=state_dict, safe_serialization=True)
    if dtype is not None:  # save_pretrained writes the dtype of the module's parameters
        model.config.dtype = dtype
        model.config.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    return out_dir


def _cast_floats(state_dict: dict, dtype: torch.dtype) -> dict:
    """Floating-point tensors cast to ``dtype``; tensors sharing storage (tied weights) stay shared."""
    cast: dict[tuple, torch.Tensor] = {}
    out = {}
    for key, value in state_dict.items():
        if isinstance(value, torch.Tensor) and value.is_floating_point() and value.dtype != dtype:
            alias = (value.device, value.untyped_storage().data_ptr(), value.storage_offset(), tuple(value.shape), value.stride())
            value = cast.setdefault(alias, value.to(dtype))
        out[key] = value
    return out


def link_checkpoint(src: str | Path, out_dir: str | Path, overwrite: bool = False) -> Path:
    """Make ``out_dir`` a folder of symlinks to the files of an existing HF checkpoint ``src``
    (written as :func:`study.outputs.atomic_folder` writes any model folder)."""
    src = require_model_folder(Path(src).resolve())
    with atomic_folder(out_dir, inputs=[src], overwrite=overwrite) as tmp:
        for item in src.iterdir():
            (tmp / item.name).symlink_to(item)
    return Path(out_dir)
