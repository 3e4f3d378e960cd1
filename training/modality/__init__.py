"""The modality check: which kind of image is this (app/modality.py), fitted on every data set."""
