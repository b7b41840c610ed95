"""Macro averages over a (records x fields) score matrix, and their 95% bootstrap intervals
(records resampled with replacement)."""

from __future__ import annotations


def macro(scores, mask):
    """Mean over fields (columns with any pair in ``mask``) of the mean per-record score."""
    import numpy as np

    counts = mask.sum(axis=0)
    sums = np.where(mask, scores, 0.0).sum(axis=0)
    used = counts > 0
    if not used.any():
        return None
    return float((sums[used] / counts[used]).mean())


def intervals(scores, masks: dict, n_boot: int, seed: int) -> dict[str, list[float] | None]:
    """95% percentile intervals of each macro, records resampled with replacement.

    A resample is drawn as multinomial counts per record, so each macro of a resample is
    (counts @ scores) / (counts @ mask) per field, then the mean over fields with pairs."""
    import numpy as np

    n = scores.shape[0]
    if n == 0 or n_boot <= 0:
        return {name: None for name in masks}
    rng = np.random.default_rng(seed)
    out: dict[str, list[float] | None] = {}
    draws = [rng.multinomial(n, np.full(n, 1.0 / n), size=min(256, n_boot - start))
             for start in range(0, n_boot, 256)]
    for name, mask in masks.items():
        values = []
        weighted = np.where(mask, scores, 0.0)
        maskf = mask.astype(float)
        for counts in draws:
            sums, totals = counts @ weighted, counts @ maskf
            with np.errstate(invalid="ignore", divide="ignore"):
                means = np.where(totals > 0, sums / np.where(totals > 0, totals, 1), np.nan)
            used = totals > 0
            per_sample = np.where(used.any(axis=1), np.nansum(means, axis=1) / np.maximum(used.sum(axis=1), 1),
                                  np.nan)
            values.append(per_sample)
        values = np.concatenate(values)
        values = values[~np.isnan(values)]
        out[name] = ([float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))]
                     if values.size else None)
    return out
