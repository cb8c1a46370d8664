"""The math of PURE: credit (paper Eq. 3-5, section 3.4), statistics, KL estimators, losses.

Tensors in, tensors out: no config, no I/O, no trainer imports."""
