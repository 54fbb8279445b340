"""Which array module runs device code, and the NVRTC compiler for the CUDA kernels."""
