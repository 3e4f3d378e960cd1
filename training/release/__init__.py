"""Layer 4: from a fitted network to a published version: the trust layer, export, the card, and the `train`
and `calibrate` workflows. May import the layers below (data, networks, evaluation)."""
