"""The cloud service: gRPC server, tail F2, the tap bus and the recorder."""
