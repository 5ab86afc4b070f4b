"""Zero-shot classification (paper Table 3): each clip is assigned the class whose text embedding has the
largest dot product with the clip embedding.

Top-k accuracy uses the tie rule of :mod:`eval.metrics.retrieval` (default ``"average"``: exact ties are
settled by the expected outcome of a uniformly random tie-break; without ties top-1 is plain arg-max accuracy).
Values are fractions in [0, 1].

Class prompts: ``class_prompts`` turns dataset class names into texts with one rule — underscores become
spaces, the name is put into ``template`` and the result goes through ``model.text_slots.normalize_text`` (the
project's one text rule): ``"Dog_bark"`` → ``"dog bark"``, template ``"the sound of {}"`` → ``"the sound of dog
bark"``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from eval.metrics.retrieval import TIE_RULES, _as_matrix, hit_probability
from model.text_slots import normalize_text


def class_prompts(class_names: Sequence[str], template: str = "{}") -> list[str]:
    """One normalised prompt per class name (``_`` → space, ``template.format(name)``, ``normalize_text``).

    Raises ValueError when the template has no ``{}`` or two classes give the same prompt."""
    if template.count("{}") != 1:
        raise ValueError(f"template must contain exactly one '{{}}', got {template!r}")
    prompts = []
    for name in class_names:
        text = normalize_text(template.format(" ".join(str(name).replace("_", " ").split())))
        if not text:
            raise ValueError(f"class name {name!r} gives an empty prompt")
        prompts.append(text)
    seen: dict[str, str] = {}
    for name, text in zip(class_names, prompts, strict=True):
        if text in seen:
            raise ValueError(f"class names {seen[text]!r} and {name!r} both give the prompt {text!r}")
        seen[text] = name
    return prompts


def zeroshot_metrics(
    audio_emb: np.ndarray,
    class_emb: np.ndarray,
    labels: Sequence[int] | np.ndarray,
    class_names: Sequence[str] | None = None,
    ks: Sequence[int] = (1, 5),
    ties: str = "average",
) -> dict:
    """Top-k accuracy of ``audio_emb`` [N, D] against ``class_emb`` [C, D] with true ``labels`` int [N].

    Returns ``{"top1", "top5" (only when C > 5), "balanced_top1" (mean of per-class top-1 over classes with
    clips), "per_class": {name: {"top1", "n"}}, "n_clips", "n_classes", "ties"}``; per_class keys are
    ``class_names`` (default: the class indices as strings)."""
    audio = _as_matrix(audio_emb, "audio_emb")
    classes = _as_matrix(class_emb, "class_emb")
    y = np.asarray(labels)
    n, c = audio.shape[0], classes.shape[0]
    if audio.shape[1] != classes.shape[1]:
        raise ValueError(f"embedding sizes differ: audio {audio.shape[1]}, classes {classes.shape[1]}")
    if n == 0 or c == 0:
        raise ValueError(f"need at least one clip and one class, got {n} clips and {c} classes")
    if y.shape != (n,) or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"labels must be an int array of shape ({n},), got {y.dtype} {y.shape}")
    if y.min() < 0 or y.max() >= c:
        raise ValueError(f"labels must be in [0, {c}), got [{y.min()}, {y.max()}]")
    if class_names is not None and len(class_names) != c:
        raise ValueError(f"{len(class_names)} class names for {c} class embeddings")
    if ties not in TIE_RULES:
        raise ValueError(f"ties must be one of {TIE_RULES}, got {ties!r}")

    sim = audio @ classes.T  # [N, C]
    true = sim[np.arange(n), y][:, None]
    own = np.zeros(sim.shape, dtype=bool)
    own[np.arange(n), y] = True
    greater = ((sim > true) & ~own).sum(axis=1)
    equal = ((sim == true) & ~own).sum(axis=1)
    ones = np.ones(n, dtype=np.int64)

    top1 = hit_probability(greater, equal, ones, 1, ties)
    out: dict = {"top1": float(top1.mean())}
    for k in ks:
        k = int(k)
        if k < 1:
            raise ValueError(f"ks must be positive, got {k}")
        if 1 < k < c:  # top-k with k >= C is trivially 1
            out[f"top{k}"] = float(hit_probability(greater, equal, ones, k, ties).mean())
    names = [str(i) for i in range(c)] if class_names is None else [str(x) for x in class_names]
    per_class = {}
    for j, name in enumerate(names):
        sel = y == j
        per_class[name] = {
            "top1": float(top1[sel].mean()) if sel.any() else float("nan"),
            "n": int(sel.sum()),
        }
    present = [v["top1"] for v in per_class.values() if v["n"] > 0]
    out["balanced_top1"] = float(np.mean(present))
    out.update(per_class=per_class, n_clips=int(n), n_classes=int(c), ties=ties)
    return out
