"""mrcbench: which parts of self-attention does an extractive MRC model rely on?

Importing the package changes nothing in the process: the CPU-kernel pin is applied by every
``mrcbench`` command (:mod:`mrcbench.cli`) and by an explicit :func:`mrcbench.runtime.kernels.apply`
in a notebook or script that computes with mrcbench.
"""

__version__ = "0.1.0"
