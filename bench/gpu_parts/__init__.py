"""The parts of bench/gpu.py, one module each, loaded by it as the package
`lighthead_bench_gpu_parts` (the bench scripts are not an installed package)."""
