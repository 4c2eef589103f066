"""numba.cuda backend of PolarQuant paper mode (polarref golden signatures).

    import cuda_kernels
    code = cuda_kernels.encode(keys)            # NumPy or device arrays (torch, cupy, numba)
    s = cuda_kernels.scores(queries, code)      # table="float16": half-precision tables,
                                                # table="mma": float16 keys on tensor cores
    keys_hat = cuda_kernels.decode(code)

Kernels live in `kernels.py`, launchers (checks, grids, copies) in `launch.py`.
Under NUMBA_ENABLE_CUDASIM=1 the same kernels run on the CPU simulator.
"""
from .launch import (
    SIM,
    TABLE_KINDS,
    DevicePolarCode,
    decode,
    encode,
    is_device_array,
    scores,
)

__all__ = ["encode", "decode", "scores", "DevicePolarCode", "is_device_array", "SIM", "TABLE_KINDS"]


class _ScoresOption:
    """One option of `scores` as a backend of its own (scores only; encode and decode are the
    ones of `cuda_kernels`), declaring the precisions its tolerances follow from.

    half_tables, `polarref verify --backend cuda-fp16`: table="float16", judged with the
    float32 score tolerance plus the rounding of every table entry to float16
    (polarref.tolerances.table_entry_bound); products and sums stay float32.
    tensor_cores, `--backend cuda-mma`: table="mma", judged with the float32 score
    tolerance plus the rounding of keys and queries to float16 and a float32 accumulator
    that need not round to nearest (polarref.tolerances.float16_key_bound).
    """

    WORKING_DTYPE = "float32"

    def __init__(self, table, **dtypes):
        self.table = table
        for name, dtype in dtypes.items():          # TABLE_DTYPE, KEY_DTYPE
            setattr(self, name, dtype)

    def scores(self, queries, code):
        return scores(queries, code, table=self.table)


half_tables = _ScoresOption("float16", TABLE_DTYPE="float16")
tensor_cores = _ScoresOption("mma", KEY_DTYPE="float16")
