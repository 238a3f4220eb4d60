"""The inference layer: InferenceModel and its subclasses, runtimes, the engine and Immich's /predict
contract. Getting model files (catalogue, downloads, import, export) is the model store's (`model_store/`)."""
