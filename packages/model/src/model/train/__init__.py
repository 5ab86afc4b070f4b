"""FLAM trainer (`python -m model.train` / `torchrun -m model.train`); never imported by `model/__init__`."""
