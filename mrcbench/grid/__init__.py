"""The zone x layer (x head) masking grid: its cells, the fast and naive runs, the grid table, the zone
statistics of an eval split, and the commands ``ablate``, ``merge-grid``, ``extract-attention``."""
