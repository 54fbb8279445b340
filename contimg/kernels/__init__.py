"""contimg's device kernels, written with numba-cuda (`wgrid`: the w-stacking gridder's grid and
degrid per w plane; `hogbom`: the Högbom minor cycle in one block).

One source for two targets: compiled for the device where one is present (CuPy arrays go in
through ``__cuda_array_interface__``), and executed on the CPU by numba-cuda's CUDA simulator
(``NUMBA_ENABLE_CUDASIM=1``, set before numba is imported) in CI, where tests/test_kernels.py
holds every kernel to its CPU twin. The modules import ``numba.cuda``: import them only where a
kernel is launched (numba-cuda is in the ``gpu`` and ``test`` extras, not a core dependency).
"""
