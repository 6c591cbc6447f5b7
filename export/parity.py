"""Parity of each export step and accuracy of each artifact, as the manifest records them.

Parity compares raw model outputs on the same inputs: PyTorch -> ONNX Runtime fp32 (the
export must be exact to float32 rounding), fp32 -> INT8 and fp32 -> FP16 (quantisation
error). Accuracy runs the artifact the way the flight runtime does (the learned stages of
:mod:`onboard.stages.learned` over an :class:`~onboard.engines.onnxruntime_engine.
OnnxRuntimeEngine`) on held-out simulated cubes against their truth, with the metrics of
:mod:`onboard.metrics`, so a precision's cost is measured where it matters: PSNR and
spectral angle for the denoiser, tillage accuracy and residue-fraction MAE for the
classifier. Kept apart from the engines, as Polygraphy keeps its comparator apart from its
runners.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from export.data import Sample
from onboard import metrics
from onboard.formats.types import Cube, ResidueMap


def ort_run(path: str | Path, feed: dict[str, np.ndarray], threads: int = 1) -> list[np.ndarray]:
    """Outputs of ``path`` on ``feed`` in a plain CPU ONNX Runtime session."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    sess = ort.InferenceSession(str(path), sess_options=options,
                                providers=["CPUExecutionProvider"])
    return sess.run(None, feed)


def output_parity(reference: Callable[[dict[str, np.ndarray]], Sequence[np.ndarray]],
                  path: str | Path, feeds: Sequence[dict[str, np.ndarray]]
                  ) -> dict[str, float]:
    """Largest and mean absolute difference of every output of ``path`` from
    ``reference(feed)`` over ``feeds``, and the reference's largest magnitude (the scale
    the errors are relative to)."""
    worst, total, count, scale = 0.0, 0.0, 0, 0.0
    for feed in feeds:
        for want, got in zip(reference(feed), ort_run(path, feed), strict=True):
            d = np.abs(np.asarray(got, np.float64) - np.asarray(want, np.float64))
            worst = max(worst, float(d.max()))
            total += float(d.sum())
            count += d.size
            scale = max(scale, float(np.abs(want).max()))
    return {"max_abs_error": worst, "mean_abs_error": total / max(count, 1),
            "reference_max_abs": scale}


def denoise_accuracy(denoise: Callable[[Cube], Cube], samples: Sequence[Sample]
                     ) -> dict[str, float]:
    """Mean PSNR (dB, peak = the truth's maximum) and spectral angle (degrees) of
    ``denoise`` against each sample's truth over its valid pixels."""
    psnr, sam = [], []
    for s in samples:
        out = denoise(s.cube)
        psnr.append(metrics.psnr_db(out.data, s.truth, out.valid))
        sam.append(metrics.spectral_angle_deg(out.data, s.truth, out.valid))
    return {"psnr_db": float(np.mean(psnr)), "spectral_angle_deg": float(np.mean(sam))}


def residue_accuracy(classify: Callable[[Cube], ResidueMap], cubes: Sequence[Cube],
                     samples: Sequence[Sample]) -> dict[str, float]:
    """Tillage class accuracy and residue-fraction MAE of ``classify`` on ``cubes`` (the
    samples' cubes after denoising) against the samples' truth, over valid pixels (mean
    over cubes); and the accuracy on the pixels not marked uncertain with their share of
    the valid pixels (over all pixels)."""
    acc, mae, kept, right = [], [], 0, 0
    total = 0
    for cube, s in zip(cubes, samples, strict=True):
        r = classify(cube)
        ok = cube.valid & np.isfinite(r.fractions).all(axis=0)
        acc.append(metrics.class_accuracy(r.tillage, s.tillage, ok))
        mae.append(metrics.fraction_mae(r.fractions, s.fractions, ok))
        sure = ok if r.uncertain is None else ok & ~r.uncertain
        kept += int(sure.sum())
        right += int((r.tillage[sure] == s.tillage[sure]).sum())
        total += int(ok.sum())
    return {"tillage_accuracy": float(np.mean(acc)), "fraction_mae": float(np.mean(mae)),
            "confident_accuracy": right / max(kept, 1), "confident_share": kept / max(total, 1)}

