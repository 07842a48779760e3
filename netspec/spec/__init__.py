"""The spec language: layer types, networks, experiments, sweep files, their schema, canonical weights."""
