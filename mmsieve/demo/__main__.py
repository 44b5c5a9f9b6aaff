"""`python -m mmsieve.demo [DIR]`: build the demo set and run the pipeline on it."""

import sys

from mmsieve.demo import run_demo


if __name__ == "__main__":
    run_demo(sys.argv[1] if len(sys.argv) > 1 else "demo_output")
