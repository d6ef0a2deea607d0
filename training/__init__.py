"""Training side of augment (needs torch): codec fitting, the CVAE, export to an ONNX bundle."""
