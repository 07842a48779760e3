"""netspec's backends, one package per framework, laid out alike (docs/design.md, "The layers of the
house"): `backend.py` (the Backend object, `BACKEND`, devices), `builders.py` (one builder per layer
type), `layers.py` (hand-written BatchNorm and Dropout), `model.py` (the compiled Model).

The core never imports this package: it finds a backend by name through the entry-point group
`netspec.backends` (`netspec.protocol.backend.load_backend("torch")`), which imports that framework only.
"""
