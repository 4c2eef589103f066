"""Backends by name: every one offers encode / decode / scores with the golden signatures.

    numpy   the golden model (polarref.golden), float64
    numba   Numba CPU kernels (cpu_kernels)
    cuda    numba.cuda kernels (cuda_kernels); under NUMBA_ENABLE_CUDASIM=1 on a CPU
    cuda-fp16  the CUDA scoring kernel with float16 angle tables (scores only)
    cuda-mma   the CUDA tensor-core scoring kernel: float16 keys and queries (scores only)
    pkg.mod:obj   any third-party object or module with any subset of the three

A backend may say the precision it computes in as WORKING_DTYPE (float32 if
it says nothing) or per operation as PRECISION = {"encode": np.float64, ...}
(operations it leaves out get WORKING_DTYPE), and as TABLE_DTYPE a coarser precision its angle-table
entries are stored in (float16 tables), and as KEY_DTYPE the precision keys and queries are rounded to
before their products are summed (tensor cores); tolerances are derived from their eps.
"""
from __future__ import annotations

import importlib

import numpy as np
from types import SimpleNamespace

OPERATIONS = ("encode", "decode", "scores")
BUILTIN = {"numpy": "polarref.golden", "golden": "polarref.golden",
           "numba": "cpu_kernels", "cuda": "cuda_kernels",
           "cuda-fp16": "cuda_kernels:half_tables", "cuda-mma": "cuda_kernels:tensor_cores"}


def load_backend(name: str):
    """A namespace with `name` and whichever of encode/decode/scores the backend offers."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"backend must be a name or 'package.module:object', got {name!r}")
    target = BUILTIN.get(name, name)
    module_name, _, attribute = target.partition(":")
    try:
        obj = importlib.import_module(module_name)
    except ImportError as error:
        raise ValueError(f"backend {name!r}: cannot import {module_name!r} ({error})") from error
    if attribute:
        for part in attribute.split("."):
            if not hasattr(obj, part):
                raise ValueError(f"backend {name!r}: {module_name!r} has no attribute {attribute!r}")
            obj = getattr(obj, part)
    found = {op: getattr(obj, op) for op in OPERATIONS if callable(getattr(obj, op, None))}
    if not found:
        raise ValueError(f"backend {name!r} offers none of {OPERATIONS}")
    working = np.dtype(getattr(obj, "WORKING_DTYPE", np.float32))
    declared = dict(getattr(obj, "PRECISION", None) or {})
    unknown = set(declared) - set(OPERATIONS)
    if unknown:
        raise ValueError(f"backend {name!r}: PRECISION names unknown operations {sorted(unknown)}")
    precision = {op: np.dtype(declared.get(op, working)) for op in OPERATIONS}
    table = getattr(obj, "TABLE_DTYPE", None)
    key = getattr(obj, "KEY_DTYPE", None)
    return SimpleNamespace(name=name, working_dtype=working, precision=precision,
                           table_dtype=None if table is None else np.dtype(table),
                           key_dtype=None if key is None else np.dtype(key), **found)
