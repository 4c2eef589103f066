"""polarref: the reference and testbed for PolarQuant key-cache quantization.

The golden model (plain float64 NumPy) of Wu et al., NeurIPS 2025, paper mode:

    import polarref
    code = polarref.encode(keys, r_bits=4, t_bits=4, group_size=128, pairing="half")
    keys_hat = polarref.decode(code)
    s = polarref.scores(queries, code)          # table-based q . k_hat
    s_ref = polarref.dense_scores(queries, keys)
"""
from .code import PolarCode
from .golden import angle_table, decode, dense_scores, encode, radius_table, scores

__all__ = ["PolarCode", "encode", "decode", "scores", "dense_scores", "angle_table", "radius_table"]
__version__ = "0.1.0"
