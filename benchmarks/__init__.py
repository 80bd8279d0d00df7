"""Benchmarks: jaxmnist beside its peers (`compare`), the matmul floor (`floor`), scaling (`sweep`).

Not part of the installed package: run them from the repository root, for example
`python -m benchmarks.compare`.
"""
