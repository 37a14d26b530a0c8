"""Training Vocos with the reference recipe (vocos 0.1.0's experiment) on Lightning: ``pip install .[train]``.

The generator is vocos_core's own :class:`~vocos_core.pretrained.Vocos`, so what it learns is already
in the official Hub layout; :mod:`.export` writes it out. Only this package imports Lightning.
"""
