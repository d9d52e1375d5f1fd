"""The edge service: capture -> preprocess -> head F1 -> codec -> link -> gRPC."""
