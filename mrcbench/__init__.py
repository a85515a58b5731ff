"""mrcbench: which parts of self-attention does an extractive MRC model rely on?"""

__version__ = "0.1.0"
