"""Device handling: what leaves a model for numpy goes through the host first, what arrives from the
wire meets the model on its device, and an edge whose every update was refused fails.

The CUDA paths themselves run in the tests marked `gpu` (skipped without a GPU). On the CPU a
tensor subclass that refuses `.numpy()` until copied with `.cpu()`, as a CUDA tensor does, checks
the conversion helpers; the `meta` device, which refuses to mix with CPU tensors as CUDA does,
checks the moves.
"""
import numpy as np
import pytest
import torch

from cloud.federation import Federation
from edge.session import EdgeConfig
from edge.trainer import EdgeTrainer
from splitleak.cli.main import main
from splitleak.models import build_split_model
from splitleak.tensors import arrays, host_copy, module_device, on_device, to_numpy

gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
TINY = dict(source="synthetic:40x40", model="lenet", size=32, progress=False, split="none")


class DeviceTensor(torch.Tensor):
    """Stands in for a CUDA tensor: `.numpy()` raises as it does there; `.cpu()` gives a host tensor."""

    def numpy(self, *args, **kwargs):
        raise TypeError("can't convert cuda:0 device type tensor to numpy. Use Tensor.cpu() first.")

    def cpu(self, *args, **kwargs):
        return torch.Tensor.cpu(self).as_subclass(torch.Tensor)


def on_fake_device(t: torch.Tensor) -> torch.Tensor:
    return t.as_subclass(DeviceTensor)


def test_the_stand_in_refuses_numpy_as_a_cuda_tensor_does():
    with pytest.raises(TypeError, match="cuda"):
        on_fake_device(torch.ones(2)).numpy()


def test_to_numpy_copies_to_the_host_first():
    t = on_fake_device(torch.arange(6.0).reshape(2, 3).requires_grad_(True))
    assert np.array_equal(to_numpy(t), np.arange(6.0).reshape(2, 3))
    assert arrays({"a": on_fake_device(torch.ones(1)), "b": on_fake_device(torch.zeros(2))})["b"].shape == (2,)


def test_host_copy_shares_no_memory_with_the_model():
    module = torch.nn.Linear(2, 2)
    snapshot = host_copy(module.state_dict())
    with torch.no_grad():
        module.weight.add_(1.0)
    assert not torch.equal(snapshot["weight"], module.weight) and snapshot["weight"].device.type == "cpu"


def test_on_device_moves_what_the_wire_decoded_onto_the_model():
    on_meta = on_device({"w": torch.ones(2)}, "meta")
    assert on_meta["w"].device.type == "meta"
    with pytest.raises(RuntimeError, match="device"):  # what CUDA says to a host tensor, too
        torch.ones(2, device="meta") - torch.ones(2)
    assert module_device(torch.nn.Linear(1, 1).to("meta")).type == "meta"
    assert module_device(torch.nn.ReLU()).type == "cpu"


def test_the_federation_answers_with_host_tensors_and_takes_host_updates():
    model = build_split_model("lenet", "conv2", size=32)
    federation = Federation(model)
    grads = {n: torch.ones_like(p) for n, p in model.tail.named_parameters()}
    federation.submit("fedsgd", grads, 0.1)
    assert federation.round == 1 and all(v.device.type == "cpu" for v in federation.state().values())
    z = model.head(torch.rand(2, 3, 32, 32)).detach()
    dz = federation.split_step(z, torch.tensor([1, 2]), 0.1)
    assert federation.round == 2 and dz.device.type == "cpu" and dz.shape == z.shape


def test_an_edge_whose_every_update_was_refused_exits_2_with_the_reason(start_cloud, capsys):
    cloud = start_cloud(allow_models=("cnn6",))  # answers every lenet update with an error
    code = main(["edge", "--cloud", f"127.0.0.1:{cloud.port}", "--source", "synthetic:40x40", "--model", "lenet",
                 "--split", "none", "--size", "32", "--frames", "2", "--mode", "fedsgd", "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert "acknowledged none of the 2 updates" in err[0] and "not served here" in err[0]


# ---- on a GPU: every learning mode end to end, edge and cloud on CUDA ----

@gpu
@pytest.mark.gpu
@pytest.mark.parametrize("mode,split", [("fedsgd", "none"), ("fedavg", "none"), ("split", "conv2"),
                                        ("fedsgd", "conv3")])
def test_every_learning_mode_runs_on_cuda(start_cloud, tmp_path, mode, split):
    cloud = start_cloud(device="cuda", record=str(tmp_path / "rec"))
    trainer = EdgeTrainer(EdgeConfig(cloud=f"127.0.0.1:{cloud.port}", **{**TINY, "split": split}, mode=mode,
                                     frames=3, device="cuda", local_steps=2))
    summary = trainer.run()
    assert summary["sent"] == summary["acked"] == 3, summary["errors"]
    assert next(trainer.module.parameters()).device.type == "cuda"
