"""Pathology consistency: does the candidate still show the condition it was made for?

Two scorers give the probability of the intended condition (the candidate's ``label``):

* :func:`probabilities` / :func:`classifier_scores`: a classifier run folder of
  ``dermsynth train`` (its ``model.pt``); every candidate label must be one of its classes,
  else the run is refused with the mismatch named.
* :func:`clip_scores`: zero-shot CLIP (``transformers.CLIPModel``, a hub id or a local folder
  holding the model, its tokenizer and image processor). The candidate image is compared with
  one prompt per class (``"a clinical photo of {condition} on skin"``); the score is the
  softmax probability of the intended class. With a single class there is nothing to compare
  against, so the score is the image-prompt cosine mapped to [0, 1] as ``(cos + 1) / 2``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd

from dermsynth.errors import DermsynthError

CLIP_TEMPLATE = "a clinical photo of {condition} on skin"


def classifier_classes(run_dir: str | os.PathLike[str]) -> list[str]:
    """The classes of a finished classifier run, read from its checkpoint."""
    from dermsynth.train.predict import load_run

    return list(load_run(run_dir, device="cpu", progress=False).model.classes)


def check_classes(
    run_dir: str | os.PathLike[str], classes: Sequence[str], labels: Sequence[str]
) -> None:
    """Refuse a classifier that does not know every candidate label, naming the mismatch."""
    unknown = sorted(set(labels) - set(classes))
    if unknown:
        raise DermsynthError(
            f"classifier {run_dir} was trained on other classes: it knows "
            f"{', '.join(map(repr, classes))}, but the candidates are labelled "
            f"{', '.join(map(repr, unknown))}; use a classifier trained on these conditions"
        )


def _scorer(
    run_dir: str | os.PathLike[str], device: str, cache_dir: str | os.PathLike[str] | None
) -> Any:
    from dermsynth.train.predict import load_run

    return load_run(run_dir, device=device, cache_dir=cache_dir, progress=False)


def _probabilities(scorer: Any, images: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in ("image_id", "path") if c not in images.columns]
    if missing:
        raise DermsynthError(f"images to score lack column(s) {', '.join(missing)}")
    rows = images.reset_index(drop=True).copy()
    if "label" not in rows.columns:
        rows["label"] = ""
    if "fst" not in rows.columns:
        rows["fst"] = -1
    classes = list(scorer.model.classes)
    kept, logp, skipped = scorer.score(rows, skip_bad=True)
    probs = np.exp(logp.astype(np.float64)) if len(kept) else np.zeros((0, len(classes)))
    out = pd.DataFrame({"image_id": kept["image_id"].to_numpy()})
    for j, name in enumerate(classes):
        out[f"p_{name}"] = probs[:, j]
    out.attrs["classes"] = classes
    out.attrs["skipped"] = skipped
    return out


def probabilities(
    run_dir: str | os.PathLike[str],
    images: pd.DataFrame,
    *,
    device: str = "auto",
    cache_dir: str | os.PathLike[str] | None = None,
) -> pd.DataFrame:
    """Class probabilities of ``images`` (columns ``image_id``, ``path``; ``label`` and ``fst``
    optional) under the model of a classifier run: ``image_id`` then ``p_<class>`` columns.

    Unreadable images are left out (listed in ``result.attrs["skipped"]``). Caches (resized
    images, backbone features) go where the train package puts them: ``<RUN>/../cache`` unless
    ``cache_dir`` is given.
    """
    return _probabilities(_scorer(run_dir, device, cache_dir), images)


def classifier_scores(
    run_dir: str | os.PathLike[str],
    candidates: pd.DataFrame,
    *,
    device: str = "auto",
    cache_dir: str | os.PathLike[str] | None = None,
) -> pd.Series:
    """Probability of each candidate's own label (indexed like ``candidates``; NaN if unread).

    A classifier that does not know every candidate label is refused before any image is read.
    """
    scorer = _scorer(run_dir, device, cache_dir)
    check_classes(run_dir, list(scorer.model.classes), candidates["label"].unique().tolist())
    probs = _probabilities(scorer, candidates)
    by_id = probs.set_index("image_id")
    values = [  # pandas-stubs types a cell as any scalar: the cast names the column's floats
        float(cast(float, by_id.at[i, f"p_{label}"])) if i in by_id.index else float("nan")
        for i, label in zip(candidates["image_id"], candidates["label"], strict=True)
    ]
    return pd.Series(values, index=candidates.index, name="score_pathology")


def load_clip(model: str | os.PathLike[str], device: str = "cpu") -> tuple[Any, Any, Any]:
    """(model, tokenizer, image processor) of a CLIP checkpoint: local folder or hub id."""
    try:
        from transformers import AutoTokenizer, CLIPImageProcessor, CLIPModel
    except ImportError:
        raise DermsynthError(
            "CLIP scoring needs transformers: pip install 'dermsynth[generate]'"
        ) from None
    name = str(model)
    try:
        clip = CLIPModel.from_pretrained(name).eval().to(device)
        tokenizer = AutoTokenizer.from_pretrained(name)
        processor = CLIPImageProcessor.from_pretrained(name)
    except (OSError, ValueError) as exc:
        where = "folder" if Path(name).exists() else "hub id (offline: give a local folder)"
        raise DermsynthError(
            f"cannot load a CLIP model from {where} {name!r}: "
            f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
        ) from None
    return clip, tokenizer, processor


def clip_scores(
    clip: tuple[Any, Any, Any],
    images: Sequence[np.ndarray],
    labels: Sequence[str],
    classes: Sequence[str] | None = None,
    *,
    template: str = CLIP_TEMPLATE,
    batch_size: int = 16,
) -> np.ndarray:
    """Zero-shot probability of each image's ``labels[i]`` among ``classes`` (default: the
    distinct labels); see the module docstring for the single-class case."""
    import torch
    from PIL import Image

    model, tokenizer, processor = clip
    names = list(dict.fromkeys(classes if classes is not None else labels))
    unknown = sorted(set(labels) - set(names))
    if unknown:
        raise DermsynthError(
            f"CLIP classes lack the candidate label(s) {', '.join(map(repr, unknown))}"
        )
    device = next(model.parameters()).device
    prompts = [template.format(condition=n) for n in names]
    with torch.inference_mode():
        text = tokenizer(prompts, padding=True, truncation=True, return_tensors="pt").to(device)
        text_emb = model.get_text_features(**text)
        text_emb = _as_tensor(text_emb)
        text_emb = text_emb / text_emb.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        out = []
        for start in range(0, len(images), batch_size):
            chunk = [
                Image.fromarray(np.asarray(a, dtype=np.uint8))
                for a in images[start : start + batch_size]
            ]
            pixels = processor(images=chunk, return_tensors="pt")["pixel_values"].to(device)
            img_emb = _as_tensor(model.get_image_features(pixel_values=pixels))
            img_emb = img_emb / img_emb.norm(dim=-1, keepdim=True).clamp_min(1e-12)
            cos = img_emb @ text_emb.T
            if len(names) > 1:
                scale = model.logit_scale.exp() if hasattr(model, "logit_scale") else 100.0
                out.append(torch.softmax(cos * scale, dim=-1).float().cpu().numpy())
            else:
                out.append(((cos + 1) / 2).float().cpu().numpy())
    if not out:
        return np.zeros(0)
    probs = np.concatenate(out)
    index = {n: j for j, n in enumerate(names)}
    return np.array([probs[i, index[label]] for i, label in enumerate(labels)], dtype=np.float64)


def _as_tensor(value: Any) -> Any:
    """Feature getters return a tensor, or (in some transformers versions) an output object."""
    if hasattr(value, "norm"):
        return value
    for attr in ("pooler_output", "text_embeds", "image_embeds", "last_hidden_state"):
        got = getattr(value, attr, None)
        if got is not None:
            return got
    raise DermsynthError(f"unexpected CLIP output {type(value).__name__}")
