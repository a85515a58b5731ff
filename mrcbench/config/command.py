"""``mrcbench validate-config``: check a config file and count what it runs."""
from __future__ import annotations

import argparse

from mrcbench.config.loading import load
from mrcbench.config.runs import runs


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="mrcbench validate-config", description="Validate a config file.")
    parser.add_argument("config")
    args = parser.parse_args(argv)
    config = load(args.config)
    n = sum(1 for _ in runs(config))
    print(f"{args.config}: valid ({len(config['models'])} models, {len(config['experiments'])} experiments, {n} runs)")
    return 0
