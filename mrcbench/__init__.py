"""mrcbench: which parts of self-attention does an extractive MRC model rely on?"""

from mrcbench.runtime import kernels as _kernels

# Before any torch computation: pin the CPU kernels (mrcbench/runtime/kernels.py; config key cpu_kernels).
_kernels.apply()

__version__ = "0.1.0"
