"""The inference layer: InferenceModel and its subclasses, runtimes, the engine, the model store."""
