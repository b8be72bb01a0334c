"""Linear centered kernel alignment (CKA) between two representations of the same inputs.

``linear_cka`` follows Kornblith et al., "Similarity of Neural Network Representations
Revisited" (ICML 2019); the debiased form uses the unbiased HSIC estimator of Song et al. (JMLR
2012). :class:`MinibatchCKA` is the minibatch estimator of Nguyen et al., "Do Wide and Deep
Networks Learn the Same Things?" (ICLR 2021): unbiased HSIC averaged over minibatches, so that
thousands of probe images fit in memory; its three sums are reduced across DDP ranks.
"""

from __future__ import annotations

import torch
from torchmetrics import Metric

__all__ = ["MinibatchCKA", "gram", "hsic_unbiased", "linear_cka"]


def _flat(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(x.shape[0], -1).double()


def gram(x: torch.Tensor) -> torch.Tensor:
    """Linear Gram matrix ``(n, n)`` of examples ``(n, ...)`` (flattened), in float64."""
    x = _flat(x)
    return x @ x.T


def hsic_unbiased(k: torch.Tensor, l: torch.Tensor) -> torch.Tensor:  # noqa: E741
    """Unbiased HSIC of two ``(n, n)`` Gram matrices (Song et al. 2012, eq. 5); needs n > 3."""
    n = k.shape[0]
    if n < 4:
        raise ValueError(f"unbiased HSIC needs at least 4 samples, got {n}")
    k = k.clone().fill_diagonal_(0)
    l = l.clone().fill_diagonal_(0)  # noqa: E741
    kl = k @ l
    term = kl.trace() + k.sum() * l.sum() / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * kl.sum()
    return term / (n * (n - 3))


def linear_cka(x: torch.Tensor, y: torch.Tensor, debiased: bool = False) -> torch.Tensor:
    """Linear CKA of ``x`` ``(n, ...)`` and ``y`` ``(n, ...)`` (flattened per example).

    Biased: ``||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F)`` on column-centred features.
    Debiased: unbiased HSIC of the linear Gram matrices.

    Example:
        >>> x = torch.randn(50, 8)
        >>> round(linear_cka(x, 3 * x).item(), 6)
        1.0
    """
    x, y = _flat(x), _flat(y)
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x and y must hold the same examples, got {x.shape[0]} and {y.shape[0]}")
    if debiased:
        k, l = x @ x.T, y @ y.T  # noqa: E741
        return (hsic_unbiased(k, l) / (hsic_unbiased(k, k) * hsic_unbiased(l, l)).sqrt()).float()
    x = x - x.mean(dim=0, keepdim=True)
    y = y - y.mean(dim=0, keepdim=True)
    cross = (y.T @ x).pow(2).sum()
    return (cross / ((x.T @ x).norm() * (y.T @ y).norm())).float()


class MinibatchCKA(Metric):
    """Minibatch linear CKA (Nguyen et al. 2021): ``sum HSIC1(K_i, L_i) /
    sqrt(sum HSIC1(K_i, K_i) * sum HSIC1(L_i, L_i))`` over minibatches ``i`` (each > 3)."""

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("xy", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("xx", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("yy", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        grams: bool = False,
        hsic_xx: torch.Tensor | None = None,
    ) -> None:
        """Add one minibatch of paired representations ``(b, ...)``.

        With ``grams=True``, ``x`` and ``y`` are already their Gram matrices ``(b, b)``, and
        ``hsic_xx`` may pass a cached ``HSIC1(K, K)`` (the initial model's side of a
        CKA-to-initialisation is the same every time).
        """
        k, l = (x.double(), y.double()) if grams else (gram(x), gram(y))  # noqa: E741
        self.xy += hsic_unbiased(k, l)
        self.xx += hsic_unbiased(k, k) if hsic_xx is None else hsic_xx
        self.yy += hsic_unbiased(l, l)

    def compute(self) -> torch.Tensor:
        return (self.xy / (self.xx * self.yy).sqrt()).float()
