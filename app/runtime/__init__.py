"""The serving runtime: the model registry, dynamic batching, TensorFlow's settings, the decode budget, the one
inference pipeline every route adapts to, explanations and metrics. No HTTP here: its errors are domain errors
(`app.runtime.errors`), which `app/api` maps to responses."""
