"""The parts of `python -m bench.gpu`, one module each."""
