"""Shared fixtures: a real cloud on an ephemeral loopback port."""
import pytest

from cloud.server import CloudConfig, CloudServer


@pytest.fixture
def start_cloud(tmp_path):
    servers = []

    def start(listen="127.0.0.1:0", **kwargs):
        server = CloudServer(CloudConfig(listen=listen, **kwargs))
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop(0)
