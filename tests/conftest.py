"""Shared fixtures: a real cloud on an ephemeral loopback port; `gpu`-marked tests skip without CUDA."""
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


@pytest.fixture
def one_thread():
    """One torch thread: small convolutions on a shared 2-core machine run 5-20x slower with more."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def same_weights():
    """Whether two modules hold bit-identical weights."""
    import torch

    def same(a, b) -> bool:
        return all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())

    return same


def pytest_collection_modifyitems(config, items):
    """Skip `gpu`-marked tests, with the reason, where torch sees no CUDA device."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="no CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
