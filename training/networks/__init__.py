"""Layer 2: the networks (the paper's CNN, Keras Applications), fitting them, BatchNorm handling, pretraining,
distribution, and the SavedModel graph they are exported as. May import `training.data`."""
