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


class _HalfTables:
    """The scoring kernel with float16 angle tables, as a backend of its own.

    `polarref verify --backend cuda-fp16` judges it with the float32 score
    tolerance plus the rounding of every table entry to float16
    (polarref.tolerances.table_entry_bound): products and sums stay float32.
    It offers only `scores`; encode and decode are the ones of `cuda_kernels`.
    """

    WORKING_DTYPE = "float32"
    TABLE_DTYPE = "float16"

    @staticmethod
    def scores(queries, code):
        return scores(queries, code, table="float16")


half_tables = _HalfTables()


class _TensorCores:
    """The tensor-core scoring kernel (cuda_kernels.mma) as a backend of its own.

    `polarref verify --backend cuda-mma` judges it with the float32 score
    tolerance plus the rounding of keys and queries to float16 and a float32
    accumulator that need not round to nearest
    (polarref.tolerances.float16_key_bound). Scores only.
    """

    WORKING_DTYPE = "float32"
    KEY_DTYPE = "float16"

    @staticmethod
    def scores(queries, code):
        return scores(queries, code, table="mma")


tensor_cores = _TensorCores()
