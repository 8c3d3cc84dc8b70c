"""Mixup, CutMix and cross-dataset mixup on batches, with soft targets.

Paper section 3.6 / Table 9: *intra-dataset* mixup (pairs from the target set) helps the teacher
trained from scratch; *cross-dataset* mixup pairs samples drawn from the target set **and** the
auxiliary (web) sources. Both need soft targets, because a mixed clip belongs to two classes with
weights ``lam`` and ``1 - lam``; pseudo-labels can already be soft (teacher probabilities), so every
function here accepts either class ids or probability rows.

The API is batch-level and framework-free (plain tensors in, tensors out) so the train loop can
call it on any layout: 2D inputs ``[N, S, 3, H, W]``, 3D inputs ``[N, V, 3, T, H, W]`` or
``[N, 3, T, H, W]``. Mixing always happens along dim 0 (the sample axis); CutMix cuts a box in
the last two dims (H, W) that is the same for every frame, so motion inside the box is kept.

Random draws use a ``numpy.random.Generator`` so that a seeded run is reproducible independently
of torch's global RNG (which the model initialisation and dropout also consume).

Typical use (what :class:`BatchMixer` does for the trainer)::

    soft = to_soft(labels, num_classes)
    inputs, soft = mixup(inputs, soft, alpha=0.2, rng=rng)
    loss = soft_target_cross_entropy(model(inputs), soft)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "to_soft",
    "sample_lambda",
    "mixup",
    "cutmix",
    "rand_box",
    "cross_source_mixup",
    "soft_target_cross_entropy",
    "BatchMixer",
]


def _rng(rng: np.random.Generator | None) -> np.random.Generator:
    return rng if rng is not None else np.random.default_rng()


def to_soft(labels: torch.Tensor | list | np.ndarray, num_classes: int,
            smoothing: float = 0.0) -> torch.Tensor:
    """Turn labels into probability rows ``[N, num_classes]`` (float32).

    * int class ids ``[N]`` -> one-hot;
    * a float ``[N, C]`` tensor is taken as already soft (teacher probabilities, multi-hot):
      rows are renormalised to sum to 1 (a multi-hot row becomes uniform over its positives);
    * ``smoothing`` mixes in the uniform distribution (label smoothing), keeping mass 1.
    """
    t = torch.as_tensor(labels)
    if t.dim() == 2 and t.is_floating_point():
        if t.shape[1] != num_classes:
            raise ValueError(f"soft labels have {t.shape[1]} classes, expected {num_classes}")
        soft = t.float().clamp_min(0)
        mass = soft.sum(dim=1, keepdim=True)
        if bool((mass <= 0).any()):
            raise ValueError("a soft label row has no probability mass")
        soft = soft / mass
    else:
        t = t.reshape(-1).long()
        if t.numel() and (int(t.min()) < 0 or int(t.max()) >= num_classes):
            raise ValueError(f"label out of range [0, {num_classes}): {t.tolist()}")
        soft = F.one_hot(t, num_classes).float()
    if smoothing:
        if not 0.0 <= smoothing < 1.0:
            raise ValueError(f"smoothing must be in [0, 1), got {smoothing}")
        soft = soft * (1.0 - smoothing) + smoothing / num_classes
    return soft


def sample_lambda(alpha: float, rng: np.random.Generator | None = None) -> float:
    """``lam ~ Beta(alpha, alpha)``; ``alpha <= 0`` disables mixing (``lam = 1``)."""
    if alpha <= 0:
        return 1.0
    return float(_rng(rng).beta(alpha, alpha))


def _perm(n: int, rng: np.random.Generator) -> torch.Tensor:
    return torch.from_numpy(rng.permutation(n)).long()


def mixup(inputs: torch.Tensor, targets: torch.Tensor, alpha: float = 0.2,
          rng: np.random.Generator | None = None, num_classes: int | None = None,
          lam: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Intra-batch mixup: ``x' = lam x + (1-lam) x[perm]``, ``y' = lam y + (1-lam) y[perm]``.

    ``targets`` may be class ids (then ``num_classes`` is needed) or soft rows. One ``lam`` per
    batch (as mmaction2's ``MixupBlending``) so the cost is one fused lerp. Returns new tensors;
    the inputs are not modified in place.
    """
    rng = _rng(rng)
    soft = _as_soft(targets, num_classes)
    if inputs.shape[0] != soft.shape[0]:
        raise ValueError(f"{inputs.shape[0]} inputs but {soft.shape[0]} targets")
    lam = sample_lambda(alpha, rng) if lam is None else float(lam)
    perm = _perm(inputs.shape[0], rng)
    mixed = inputs * lam + inputs[perm] * (1.0 - lam)
    return mixed, soft * lam + soft[perm] * (1.0 - lam)


def rand_box(height: int, width: int, lam: float,
             rng: np.random.Generator | None = None) -> tuple[int, int, int, int]:
    """A box covering about ``1 - lam`` of an ``height x width`` plane: ``(y1, y2, x1, x2)``.

    The centre is uniform and the box is clipped at the border (CutMix paper), so the area that
    is actually pasted may be smaller than asked; :func:`cutmix` corrects ``lam`` for that.
    """
    rng = _rng(rng)
    ratio = float(np.sqrt(1.0 - lam))
    ch, cw = int(height * ratio), int(width * ratio)
    cy, cx = int(rng.integers(height)), int(rng.integers(width))
    y1, y2 = int(np.clip(cy - ch // 2, 0, height)), int(np.clip(cy + ch // 2, 0, height))
    x1, x2 = int(np.clip(cx - cw // 2, 0, width)), int(np.clip(cx + cw // 2, 0, width))
    return y1, y2, x1, x2


def cutmix(inputs: torch.Tensor, targets: torch.Tensor, alpha: float = 1.0,
           rng: np.random.Generator | None = None, num_classes: int | None = None,
           lam: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """CutMix: paste a box of a permuted partner into every sample (same box for all frames).

    The label weight is the *actual* pasted area (after clipping at the border), so the soft
    target always matches the pixels.
    """
    rng = _rng(rng)
    soft = _as_soft(targets, num_classes)
    if inputs.shape[0] != soft.shape[0]:
        raise ValueError(f"{inputs.shape[0]} inputs but {soft.shape[0]} targets")
    lam = sample_lambda(alpha, rng) if lam is None else float(lam)
    h, w = int(inputs.shape[-2]), int(inputs.shape[-1])
    y1, y2, x1, x2 = rand_box(h, w, lam, rng)
    perm = _perm(inputs.shape[0], rng)
    mixed = inputs.clone()
    mixed[..., y1:y2, x1:x2] = inputs[perm][..., y1:y2, x1:x2]
    lam = 1.0 - (y2 - y1) * (x2 - x1) / float(h * w)
    return mixed, soft * lam + soft[perm] * (1.0 - lam)


def _as_soft(targets: torch.Tensor, num_classes: int | None) -> torch.Tensor:
    t = torch.as_tensor(targets)
    if t.dim() == 2 and t.is_floating_point():
        return to_soft(t, t.shape[1])
    if num_classes is None:
        raise ValueError("num_classes is needed to mix integer class labels")
    return to_soft(t, num_classes)


def cross_source_mixup(batches: Mapping[str, Mapping[str, torch.Tensor]], alpha: float = 0.2,
                       rng: np.random.Generator | None = None, num_classes: int | None = None,
                       pairing: str = "cross", target: str = "target",
                       ) -> dict[str, dict[str, torch.Tensor]]:
    """Cross-dataset mixup over one multi-source iteration (paper section 3.6, Table 9).

    ``batches`` maps source name -> ``{'inputs', 'label', ...}`` (the ``sources`` dict of a
    multi-source batch). All sources are pooled; every sample is mixed with a partner drawn from
    the pool and keeps its own source slot, so the per-source loss weights still apply.

    ``pairing``:
      * ``'cross'`` (default): a target sample is paired with an auxiliary one and an auxiliary
        sample with a target one -- the "pairs randomly chosen from both datasets" of the paper;
        with a single source it falls back to ordinary intra-batch mixup;
      * ``'any'``: partner drawn uniformly from the whole pool (a permutation).

    Inputs of all sources must have the same shape per sample (inflate images to clips first).
    Other keys of a source dict (e.g. ``weight``) are passed through. Returns a new dict with
    soft ``label`` rows.
    """
    rng = _rng(rng)
    names = list(batches)
    if not names:
        return {}
    shapes = {n: tuple(batches[n]["inputs"].shape[1:]) for n in names}
    if len(set(shapes.values())) > 1:
        raise ValueError("cross-source mixup needs inputs of one shape per sample; got "
                         + ", ".join(f"{n}: {list(s)}" for n, s in shapes.items())
                         + " (inflate images to clips with the same preset first)")
    softs = []
    for n in names:
        lab = torch.as_tensor(batches[n]["label"])
        c = lab.shape[1] if (lab.dim() == 2 and lab.is_floating_point()) else num_classes
        softs.append(_as_soft(lab, c))
    sizes = [int(batches[n]["inputs"].shape[0]) for n in names]
    x = torch.cat([batches[n]["inputs"] for n in names])
    y = torch.cat(softs)
    total = x.shape[0]
    lam = sample_lambda(alpha, rng)
    if pairing == "any" or len(names) == 1:
        partner = _perm(total, rng)
    elif pairing == "cross":
        tgt = target if target in batches else names[0]
        offsets = np.cumsum([0] + sizes)
        t_idx = np.arange(offsets[names.index(tgt)], offsets[names.index(tgt) + 1])
        a_idx = np.setdiff1d(np.arange(total), t_idx)
        partner_np = np.empty(total, dtype=np.int64)
        if len(t_idx) == 0 or len(a_idx) == 0:
            partner_np[:] = rng.permutation(total)
        else:
            partner_np[t_idx] = rng.choice(a_idx, size=len(t_idx), replace=len(a_idx) < len(t_idx))
            partner_np[a_idx] = rng.choice(t_idx, size=len(a_idx), replace=len(t_idx) < len(a_idx))
        partner = torch.from_numpy(partner_np)
    else:
        raise ValueError(f"pairing must be 'cross' or 'any', got {pairing!r}")
    mixed_x = x * lam + x[partner] * (1.0 - lam)
    mixed_y = y * lam + y[partner] * (1.0 - lam)
    out: dict[str, dict[str, torch.Tensor]] = {}
    start = 0
    for n, size in zip(names, sizes):
        entry = dict(batches[n])
        entry["inputs"] = mixed_x[start:start + size]
        entry["label"] = mixed_y[start:start + size]
        out[n] = entry
        start += size
    return out


def soft_target_cross_entropy(logits: torch.Tensor, targets: torch.Tensor,
                              reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy against probability rows: ``-sum_c y_c log softmax(z)_c``.

    Equals ``F.cross_entropy`` for one-hot rows. When the model returns several views per
    sample (``[N*V, C]`` logits for ``N`` targets), targets are repeated per view.
    """
    if targets.dim() == 1 and not targets.is_floating_point():
        targets = to_soft(targets, logits.shape[-1])
    if logits.shape[0] != targets.shape[0]:
        if logits.shape[0] % targets.shape[0]:
            raise ValueError(f"{logits.shape[0]} logits rows for {targets.shape[0]} targets")
        targets = targets.repeat_interleave(logits.shape[0] // targets.shape[0], dim=0)
    loss = -(targets.to(logits.dtype) * F.log_softmax(logits, dim=-1)).sum(dim=-1)
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    if reduction == "none":
        return loss
    raise ValueError(f"reduction must be mean|sum|none, got {reduction!r}")


@dataclass
class BatchMixer:
    """Batch augmentation the trainer applies per step (teacher: intra-dataset mixup).

    ``mixup_alpha`` / ``cutmix_alpha``: Beta parameters (0 disables that one). When both are on,
    CutMix is chosen with probability ``switch_prob``. ``prob`` is the chance that a batch is
    mixed at all. Always returns soft targets (so the loss can be one function).
    For a multi-source batch use :meth:`mix_sources` (cross-dataset mixup).
    """

    num_classes: int
    mixup_alpha: float = 0.2
    cutmix_alpha: float = 0.0
    prob: float = 1.0
    switch_prob: float = 0.5
    smoothing: float = 0.0
    pairing: str = "cross"
    seed: int | None = None

    def __post_init__(self) -> None:
        for name in ("mixup_alpha", "cutmix_alpha"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        if not 0.0 <= self.prob <= 1.0 or not 0.0 <= self.switch_prob <= 1.0:
            raise ValueError("prob and switch_prob must be in [0, 1]")
        self.rng = np.random.default_rng(self.seed)

    @property
    def enabled(self) -> bool:
        return self.prob > 0 and (self.mixup_alpha > 0 or self.cutmix_alpha > 0)

    def __call__(self, inputs: torch.Tensor, labels: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        soft = to_soft(labels, self.num_classes, self.smoothing)
        if not self.enabled or self.rng.random() >= self.prob:
            return inputs, soft
        use_cutmix = self.cutmix_alpha > 0 and (
            self.mixup_alpha <= 0 or self.rng.random() < self.switch_prob)
        if use_cutmix:
            return cutmix(inputs, soft, self.cutmix_alpha, self.rng)
        return mixup(inputs, soft, self.mixup_alpha, self.rng)

    def mix_sources(self, sources: Mapping[str, Mapping[str, torch.Tensor]]
                    ) -> dict[str, dict[str, torch.Tensor]]:
        """Cross-dataset mixup of a multi-source batch (``batch['sources']``)."""
        out = {}
        for n, b in sources.items():
            entry = dict(b)
            entry["label"] = to_soft(b["label"], self.num_classes, self.smoothing)
            out[n] = entry
        if not self.enabled or self.mixup_alpha <= 0 or self.rng.random() >= self.prob:
            return out
        return cross_source_mixup(out, self.mixup_alpha, self.rng, self.num_classes,
                                  pairing=self.pairing)
