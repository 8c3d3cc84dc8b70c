"""Score fusion: average per-video scores of several test outputs and report accuracy.

Example (RGB + a second model, weighted 1:1.5)::

    omnisource fuse tsn.json slowonly.npy --weights 1 1.5 --ann data/k400/val_list.txt

Two-stream fusion works the same way: RGB + optical flow, or RGB + audio (``omnisource test`` of
an audio recipe on the list ``omnisource extract-audio`` wrote, which keeps the video list's order),
e.g. ``omnisource fuse rgb.json audio.json --weights 1 1 --ann val_list.txt``: mmaction2's
``report_accuracy.py`` rule, ``sum(w_i * scores_i) / sum(w_i)``.

Inputs are ``omnisource test --out`` files (.json / .npy / .pkl of plain lists). Every file must
list the same videos in the annotation file's order. A weighted average only means something when
every input holds the same kind of score: each input is classified as probabilities (rows in
[0, 1] summing to 1: ``--average-clips prob``, the zoo's default) or raw scores (logits:
``--average-clips score``), and mixing the two prints a warning; ``--softmax`` turns every logit
input into probabilities first (mmaction2's ``--apply-softmax``).
"""
from __future__ import annotations

import argparse
import json
import pickle
from pathlib import Path

from omnisource.errors import InputError

HELP = "fuse per-video scores of several test outputs (weighted average) and report accuracy"


class _PlainUnpickler(pickle.Unpickler):
    """Loads plain containers only: any class reference is refused (no code execution)."""

    def find_class(self, module: str, name: str):
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} (only plain lists are accepted)")


def load_scores(path: str | Path):
    import numpy as np

    path = Path(path)
    if not path.is_file():
        raise InputError("results file not found", file=path)
    ext = path.suffix.lower()
    try:
        if ext == ".npy":
            arr = np.load(path, allow_pickle=False)
        elif ext == ".json":
            data = json.loads(path.read_text())
            arr = np.asarray(data["scores"] if isinstance(data, dict) else data, dtype=np.float64)
        elif ext == ".pkl":
            with open(path, "rb") as fh:
                arr = np.asarray(_PlainUnpickler(fh).load(), dtype=np.float64)
        else:
            raise InputError("results must be .json, .npy or .pkl", file=path)
    except (ValueError, KeyError, TypeError, pickle.UnpicklingError, json.JSONDecodeError, EOFError) as err:
        # TypeError: numbers expected, other JSON found (e.g. `omnisource predict --out` records)
        raise InputError(f"not a scores file of `omnisource test --out` ({type(err).__name__}: {err})",
                         file=path) from None
    if arr.ndim == 3:  # per-view scores (average_clips none): average the views
        arr = arr.mean(axis=1)
    if arr.ndim != 2:
        raise InputError(f"expected [videos, classes] scores, got shape {arr.shape}", file=path)
    return arr.astype(np.float64)


def score_kind(arr) -> str:
    """``'prob'`` when every row is a distribution (values in [0, 1] summing to 1), else
    ``'logits'`` (raw class scores)."""
    import numpy as np

    if arr.size and arr.min() >= -1e-6 and arr.max() <= 1 + 1e-6 and np.allclose(arr.sum(axis=1), 1.0, atol=1e-3):
        return "prob"
    return "logits"


def softmax(arr):
    import numpy as np

    e = np.exp(arr - arr.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def fuse(arrays, weights=None):

    weights = list(weights or [1.0] * len(arrays))
    if len(weights) != len(arrays):
        raise InputError(f"{len(weights)} weights for {len(arrays)} results")
    shapes = {a.shape for a in arrays}
    if len(shapes) != 1:
        raise InputError(f"results disagree in shape: {sorted(shapes)}")
    return sum(w * a for w, a in zip(weights, arrays)) / float(sum(weights))


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("results", nargs="+")
    p.add_argument("--weights", nargs="+", type=float)
    p.add_argument("--ann", required=True, help="annotation list giving the labels (same order)")
    p.add_argument("--label-map", help="class names (for class-name labels in the list)")
    p.add_argument("--out", help="write the fused scores (.json | .npy | .pkl)")
    p.add_argument("--softmax", action="store_true",
                   help="turn inputs that hold raw scores (logits) into probabilities before fusing")


def run(args: argparse.Namespace) -> int:
    from omnisource.data.annotations import load_annotations
    from omnisource.engine.metrics import evaluate_scores, format_metric

    import sys

    arrays = [load_scores(p) for p in args.results]
    kinds = [score_kind(a) for a in arrays]
    if args.softmax:
        arrays = [softmax(a) if k == "logits" else a for a, k in zip(arrays, kinds)]
    elif len(set(kinds)) > 1:
        desc = ", ".join(f"{p}: {'probabilities' if k == 'prob' else 'logits'}" for p, k in zip(args.results, kinds))
        print(f"warning: the inputs mix probabilities and raw scores (logits) ({desc}); their weighted average "
              "weighs the logit input by its scale, not by --weights. Re-run `omnisource test` with the same "
              "--average-clips for every input, or pass --softmax.", file=sys.stderr)
    fused = fuse(arrays, args.weights)
    samples = load_annotations(args.ann, label_map=args.label_map)
    labels = [s.label for s in samples]
    if len(labels) != len(fused):
        raise InputError(f"{len(fused)} scored videos but {len(labels)} annotations", file=args.ann)
    if any(not isinstance(l, int) for l in labels):
        raise InputError("fusion accuracy needs single-label annotations", file=args.ann)
    for path, arr in zip(args.results, arrays):
        m = evaluate_scores(arr, labels)
        print(f"{path}: " + "  ".join(f"{k} {format_metric(k, v, arr.shape[-1])}" for k, v in m.items()))
    m = evaluate_scores(fused, labels)
    print("fused: " + "  ".join(f"{k} {format_metric(k, v, fused.shape[-1])}" for k, v in m.items()))
    if args.out:
        from omnisource.commands.test import write_results

        write_results(args.out, fused, labels, m)
    return 0
