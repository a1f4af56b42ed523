"""Tools built on the library: the PyTorch references (`oracle.py`), parity tables (`parity.py`),
golden-value fixtures (`golden.py`: `npformer trace` / `compare`), and what the teaching notebooks
compute and draw (`explain.py`, `plots.py`). The library never imports these."""
