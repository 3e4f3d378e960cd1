"""MedScan: per-disease medical-image screening models served over HTTP."""
