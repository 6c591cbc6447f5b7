"""Ground side: train the learned models on the simulators, export them to ONNX, quantise,
compile TensorRT plans and write the model bundle the flight runtime loads (docs/design.md);
build the farmland spectral library the scene simulator ships (``spectral_library``)."""
