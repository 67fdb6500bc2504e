"""Prognostics and health management: remaining-useful-life models of machines.

- :mod:`.cmapss` reads NASA C-MAPSS turbofan files (and checks them).
- :mod:`.features` turns an engine's recent cycles into model features.
- :mod:`.model` trains, cross-validates (split by engine) and scores the model.
- :mod:`.registry` keeps versioned models; one is shipped in the package.
- :mod:`.predictor` is the API for the platform: recent cycles in, RUL and health index out.
- :mod:`.cli` is ``tiangong phm``.

See ``docs/phm.md``.
"""
