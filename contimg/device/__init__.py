"""Device plumbing below the science: which array module runs device code (`backend`, with
`backend.TWIN`: numpy standing in for cupy, so CI runs the device path's array code), the
host↔device moves of a group and their byte counter (`transfer`), and the per-stage choice of
backend after a self-check against the CPU twin (`selfcheck`). The device kernels themselves
live in `contimg.kernels` (numba-cuda)."""
