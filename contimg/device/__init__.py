"""Device plumbing below the science: which array module runs device code (`backend`) and the
per-stage choice of backend after a self-check against the CPU twin (`selfcheck`). The device
kernels themselves live in `contimg.kernels` (numba-cuda)."""
