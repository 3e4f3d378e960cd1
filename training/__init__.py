"""Training: a folder of labelled images -> an evaluated, exported SavedModel with its card."""
