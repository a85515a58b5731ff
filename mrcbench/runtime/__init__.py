"""What every command runs on: the run layout (every path), the atomic file writer and checked
readers, the CPU kernels and the inference precision."""
