"""Benchmarks, run from a checkout (`python -m benchmarks.gpu_check`). They import backend internals as
`netspec_backends.*`: in a checkout that is not installed (the GPU machines), that name is mapped to the
backends/ folder here, as the installed distribution maps it."""
from netspec.protocol.backend import map_checkout_backends

map_checkout_backends()
