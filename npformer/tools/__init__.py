"""Tools built on the library: the PyTorch references (`references/`, one module per family, and
`oracle.py`, which drives them from npformer's weights), parity tables (`parity.py`), golden-value
fixtures (`golden.py`: `npformer trace` / `compare`), and what the teaching notebooks compute and
draw (`explain/`, `plots.py`). The library never imports these; `npformer evaluate --reference`
and the CLI, which sit above the library, do (tests/test_import_cycles.py)."""
