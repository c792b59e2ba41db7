"""Direct loop implementations of self-epitomic LSR's formulas (:mod:`lcip.epitome.core`).

Slow, literal float64 references, written from the formulas of :mod:`lcip.epitome.core`'s module
docstring with Python loops over patches, positions and (label, class) pairs: the tests check
the vectorized code against them, and ``scripts/bench_epitome.py`` measures its speed-up over
them. Not for use on real tiles (their cost is patches x positions Python iterations).
"""

from __future__ import annotations

import itertools

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]


def direct_log_posterior(patches: F64, mu: F64, ok: npt.NDArray[np.bool_], sigma2: float) -> F64:
    """Log p(s | x^t) by a loop over patches and positions.

    Args:
        patches: (T, bands, K, K) patches.
        mu: (bands, H, W) epitome means.
        ok: (H - K + 1, W - K + 1) positions whose K x K window is valid.
        sigma2: the epitome's variance.

    Returns:
        (T, H - K + 1, W - K + 1) log posteriors, normalized over positions (-inf where not ok).
    """
    count, _, k, _ = patches.shape
    ph, pw = ok.shape
    out = np.full((count, ph, pw), -np.inf)
    for t, s1, s2 in itertools.product(range(count), range(ph), range(pw)):
        if ok[s1, s2]:
            diff = patches[t] - mu[:, s1 : s1 + k, s2 : s2 + k]
            out[t, s1, s2] = -np.sum(diff * diff) / (2 * sigma2)
    flat = out.reshape(count, -1)
    top = flat.max(1, keepdims=True)
    lse = top + np.log(np.exp(flat - top).sum(1, keepdims=True))
    return (flat - lse).reshape(out.shape)


def direct_embedding(
    patches: F64, classes: npt.NDArray[np.int64], mu: F64, ok: npt.NDArray[np.bool_], sigma2: float
) -> F64:
    """E_c(m, n) = sum_t [c^t = c] sum_{i,j} p(s = (m - i, n - j) | x^t), by loops.

    Args:
        patches: (T, bands, K, K) patches.
        classes: (T,) NLCD class index (0..16) of each patch.
        mu: (bands, H, W) epitome means.
        ok: valid positions (see :func:`direct_log_posterior`).
        sigma2: the epitome's variance.

    Returns:
        (17, H, W) unnormalized class embeddings.
    """
    post = np.exp(direct_log_posterior(patches, mu, ok, sigma2))
    k = patches.shape[-1]
    ph, pw = ok.shape
    out = np.zeros((17, *mu.shape[1:]))
    for t, s1, s2 in itertools.product(range(len(patches)), range(ph), range(pw)):
        out[classes[t], s1 : s1 + k, s2 : s2 + k] += post[t, s1, s2]
    return out


def direct_em(p_mn_c: F64, p_c: F64, p_l_c: F64, iterations: int) -> F64:
    """The EM of :mod:`lcip.epitome.core` by loops over (label, class) pairs, q materialized.

    q_{l,c}(m, n) ∝ p(l | m, n) p(m, n | c), normalized over positions; then
    p(l | m, n) ∝ sum_c p(c) p(l | c) q_{l,c}(m, n), normalized over labels (NaN at positions
    no class explains), starting from a uniform p(l | m, n).

    Args:
        p_mn_c: (classes, H, W) p(m, n | c).
        p_c: (classes,) p(c).
        p_l_c: (labels, classes) p(l | c).
        iterations: EM iterations.

    Returns:
        (labels, H, W) p(l | m, n).
    """
    num_l, num_c = p_l_c.shape
    p_l = np.full((num_l, *p_mn_c.shape[1:]), 1.0 / num_l)
    new = p_l
    for _ in range(iterations):
        numer = np.zeros_like(p_l)
        for lab, c in itertools.product(range(num_l), range(num_c)):
            q = p_l[lab] * p_mn_c[c]
            z = q.sum()
            if z > 0:
                numer[lab] += p_c[c] * p_l_c[lab, c] * q / z
        total = numer.sum(0)
        new = np.where(total > 0, numer / np.where(total > 0, total, 1.0), np.nan)
        p_l = np.nan_to_num(new)
    return new


__all__ = ["direct_em", "direct_embedding", "direct_log_posterior"]
