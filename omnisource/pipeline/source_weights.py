"""Per-source batch sizes and loss weights of joint training, from what each source holds.

Constant per-source batches fit one world: the demo's tuned 8 / 2 / 2 made a source with few,
noisy kept samples weigh as much as one with many clean ones elsewhere (issue 19). Here a source
weighs what its kept samples are worth, counted in target samples:

    worth_s = min(1, N_s / N_target) * above_chance(precision_s)

* ``N_s / N_target``: a source's batch share never exceeds its size relative to the target set,
  so each of its samples is revisited at most as often as a target sample (a source of 30 clips
  at the target's batch size is repeated many times per epoch and memorised, label noise and all);
* ``above_chance``: a pseudo-label right with probability p carries (p * C - 1) / (C - 1) of a
  true label's information (0 at chance, where it only adds noise). ``precision_s`` is the
  teacher's calibrated correctness on the kept samples (web/calibration.py), estimated on
  held-out target data, so no validation data sets the weights.

The raw batch of a source is ``worth_s * B_target``; if the auxiliary batches add up to more than
``max_aux_ratio * B_target`` they are scaled down together, so the target keeps its share of every
step. A source's loss weight is its raw batch over ``B_target``: the per-source mean losses then
add up like Eq. 1's sum over samples (divided by the target batch), whatever the rounding of the
batch. A source at or below chance gets no batch and is reported.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from omnisource.web.calibration import above_chance


@dataclass
class SourceStats:
    kept: int                        # samples kept by the filter
    precision: float | None          # estimated pseudo-label precision (None: unknown)


@dataclass
class SourceWeight:
    batch_size: int                  # 0: the source is left out
    loss_weight: float
    worth: float                     # in target-set units, before the joint cap
    reason: str                      # how it was chosen (shown in the run's results)


def auto_source_weights(sources: Mapping[str, SourceStats], n_target: int, batch_target: int,
                        num_classes: int, max_aux_ratio: float = 1.0) -> dict[str, SourceWeight]:
    """Batch size and loss weight of every source (see the module docstring)."""
    raw: dict[str, float] = {}
    why: dict[str, str] = {}
    worth: dict[str, float] = {}
    for name, st in sources.items():
        share = min(1.0, st.kept / max(1, n_target))
        if st.precision is None:
            q, qtxt = 1.0, "precision unknown"
        else:
            q = max(0.0, above_chance(st.precision, num_classes))
            qtxt = f"estimated precision {100 * st.precision:.0f}% ({q:.2f} above chance)"
        worth[name] = share * q
        raw[name] = worth[name] * batch_target
        why[name] = f"{st.kept} kept / {n_target} target samples, {qtxt}"
    total = sum(raw.values())
    cap = max_aux_ratio * batch_target
    scale = cap / total if total > cap else 1.0
    out = {}
    for name, r in raw.items():
        r *= scale
        if worth[name] <= 0:
            out[name] = SourceWeight(0, 0.0, 0.0, why[name] + ": left out (no better than chance)")
            continue
        note = f"; scaled by {scale:.2f} so auxiliary batches total <= {cap:g}" if scale < 1 else ""
        out[name] = SourceWeight(max(1, int(round(r))), r / batch_target, worth[name], why[name] + note)
    return out


def check_factor(base_correct: int, with_correct: int, n: int) -> tuple[float, str]:
    """Loss-weight factor of a source from the held-out source check: top-1 of the network
    trained with the source vs without it, on the same ``n`` held-out samples.

    Why a standard-error rule: the held-out split is small (a quarter of a few hundred clips), so
    a difference of one or two clips is noise; halving the weight past one standard error of the
    difference of two accuracies and dropping the source past two keeps a source unless the data
    say it hurts."""
    import math

    if n <= 0:
        return 1.0, "no held-out samples"
    pa, pb = base_correct / n, with_correct / n
    p = (pa + pb) / 2
    se = math.sqrt(max(p * (1 - p), 1.0 / n) * 2 / n)
    diff = pb - pa
    text = f"held-out top-1 {100 * pb:.1f}% with it vs {100 * pa:.1f}% without (n={n}, se {100 * se:.1f})"
    if diff < -2 * se:
        return 0.0, text + ": hurts by more than 2 se, left out"
    if diff < -se:
        return 0.5, text + ": hurts by more than 1 se, half weight"
    return 1.0, text
