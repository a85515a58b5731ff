"""What a run was computed with and whether two runs agree: the environment record, the manifest of
every result file, and ``mrcbench compare``."""
