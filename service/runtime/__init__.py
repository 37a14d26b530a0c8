"""The serving runtime, free of HTTP: the model registry and loading, the serving layer (``Vocoder``),
what a running server holds (``ServiceState``), audio in and out, metrics, memory and logging."""
