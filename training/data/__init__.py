"""Layer 1, the bottom: finding and splitting the labelled images, per-disease configuration, the decoded
input pipeline, the published versions in the models folder. Imports only `app` and the standard stack."""
