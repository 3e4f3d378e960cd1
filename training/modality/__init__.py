"""The modality check: which kind of image is this (app/contract/modality.py), fitted on every data set."""
