"""Command-line entry points (`train.py`, `eval.py`, `infer.py` and the console scripts)."""
