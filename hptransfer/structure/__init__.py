"""How a model is built, read from its shapes, its base and the probe: width dims, roles, base matching."""
