"""Bridges to other federated-learning frameworks: their traffic, recorded as splitleak recordings."""
