"""A hospital's PACS talking to MedScan in DICOM: instances routed to models by their attributes, answered
through the one inference pipeline, and each answer sent back as a DICOM Structured Report through a durable
outbox (DICOMweb STOW-RS or C-STORE). The HTTP side of it (STOW-RS in) lives in app/api/routes/dicomweb.py, the
DICOM network side (a C-STORE SCP) in scp.py."""
