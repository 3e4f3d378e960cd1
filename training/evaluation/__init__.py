"""Layer 3: measuring models: metrics, assessing an exported version as served, per-site and per-grade figures,
the results tables. May import `training.data` and `training.networks`."""
