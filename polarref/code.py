"""`PolarCode`: the quantized form of a key cache, shared by every backend."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PolarCode:
    """Keys (..., L, d) quantized group-wise in polar form (paper mode).

    With P = d // 2 pairs, G = group_size, Lq = (L // G) * G quantized tokens
    and n_groups = Lq // G:

    rho, theta    uint8 (..., Lq, P)         radius and angle codes per token and pair
    r_min, r_step float (..., n_groups, P)   radius range start and bin width per group and pair
    phi_min, phi_step float (..., n_groups, P)  the same for the angle, phi in [0, 2*pi)
    residual      (..., L - Lq, d)           the trailing tokens, unquantized and verbatim

    Backends may hold these arrays on another device (the CUDA backend keeps
    device arrays there); the golden model holds NumPy arrays.
    """

    rho: np.ndarray
    theta: np.ndarray
    r_min: np.ndarray
    r_step: np.ndarray
    phi_min: np.ndarray
    phi_step: np.ndarray
    residual: np.ndarray
    r_bits: int
    t_bits: int
    group_size: int
    pairing: str = "half"

    @property
    def batch_shape(self) -> tuple:
        """The leading axes of the keys: (..., H_kv), or () for keys (L, d)."""
        return tuple(self.rho.shape[:-2])

    @property
    def n_pairs(self) -> int:
        return int(self.rho.shape[-1])

    @property
    def head_dim(self) -> int:
        return 2 * self.n_pairs

    @property
    def n_quantized(self) -> int:
        """Lq: tokens held as codes."""
        return int(self.rho.shape[-2])

    @property
    def n_tokens(self) -> int:
        """L: all tokens, quantized plus residual."""
        return self.n_quantized + int(self.residual.shape[-2])

    @property
    def index(self) -> np.ndarray:
        """The one-byte index per pair and token: (rho << t_bits) | theta."""
        rho, theta = np.asarray(self.rho), np.asarray(self.theta)
        return ((rho << self.t_bits) | theta).astype(np.uint8)

    def bits_per_pair(self, param_bits: int = 16, packed: bool = False) -> float:
        """Storage per quantized pair and token, parameters amortised over the group.

        One byte per pair-token as the paper stores it (packed=False), or
        r_bits + t_bits with the codes packed without padding (packed=True),
        plus four parameters of `param_bits` each per group and pair (fp16 in
        the paper).
        """
        index_bits = self.r_bits + self.t_bits if packed else 8
        return index_bits + 4.0 * param_bits / self.group_size

    def to_numpy(self) -> "PolarCode":
        """The same code with every array on the host (a no-op for NumPy arrays)."""
        def host(a):
            return a.copy_to_host() if hasattr(a, "copy_to_host") else np.asarray(a)

        return PolarCode(
            host(self.rho), host(self.theta), host(self.r_min), host(self.r_step),
            host(self.phi_min), host(self.phi_step), host(self.residual),
            self.r_bits, self.t_bits, self.group_size, self.pairing,
        )
