"""What the engine runs on a CPU: the decode kernels, MKL's packed products and the host's memory.

- ``backend.py``: the CPU backends the engine chooses among (``engine/backend.py``);
- ``kernels.py`` + ``kernels_avx512.c``, ``kernels_vec.c``: hand-written float32 kernels for the
  decode step, one build per instruction set, chosen once at the engine's start;
- ``decode_stack.py`` + ``decode_stack.c``: a decode step's decoder layers in one call into the
  kernels; ``decode_path.py``: whether a decode step runs so or layer by layer, timed at start;
- ``products.py``: a projection's weight in the layouts it runs in (MKL packed, the kernels'
  panels) and the product that uses them;
- ``host.py``: huge pages and the allocator of the engine process.
"""
