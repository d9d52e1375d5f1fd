"""A Flower app that trains a splitleak model on video frames: what the integration is tested on.

Each client (a Flower SuperNode) holds every `clients`-th block of `batch_size` frames of one
stream; in round r it starts from the global model, runs `local_steps` SGD steps on its block
(eval-mode BatchNorm, the loss of `splitleak.learning`, as the edge's trainer does) and replies
with its arrays, naming its frames in a "splitleak" ConfigRecord. The server runs FedAvg
wrapped in `RecordingStrategy`. `run_frames_simulation` runs it all in Flower's simulation engine.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg
from flwr.simulation import run_simulation

from splitleak import learning
from splitleak.integrations.flower.strategy import STREAM_RECORD, RecordingStrategy, TrainSettings
from splitleak.models import SplitModel, build_split_model


@dataclass(frozen=True)
class FramesTask:
    """The frames a federation trains on and the model it trains."""

    frames: np.ndarray  # (N, 3, size, size) float32 in [0, 1]
    labels: np.ndarray  # (N,) int64
    stream: str
    model: str = "lenet"
    weights: str = "seed:0"

    def build(self) -> SplitModel:
        return build_split_model(self.model, "none", size=self.frames.shape[-1], weights=self.weights)

    def block(self, client: int, clients: int, round_: int, batch: int) -> int:
        """First frame of the block a client trains on in a (1-based) round."""
        return ((round_ - 1) * clients + client) * batch


def local_training(task: FramesTask, msg: Message, context: Context) -> Message:
    """One client's round: local SGD from the global arrays on its block of frames."""
    config = msg.content["config"]
    lr, steps, batch = float(config["lr"]), int(config["local-steps"]), int(config["batch-size"])
    client, clients = int(context.node_config["partition-id"]), int(context.node_config["num-partitions"])
    first = task.block(client, clients, int(config["server-round"]), batch)
    model = task.build()
    module = learning.trained_module(model)
    module.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    x = torch.from_numpy(task.frames[first:first + batch])
    y = torch.from_numpy(task.labels[first:first + batch])
    params = dict(module.named_parameters())
    for _ in range(steps):
        grads = learning.gradients(module, x, y)
        with torch.no_grad():
            for name, g in grads.items():
                params[name] -= lr * g
    content = RecordDict({"arrays": ArrayRecord(module.state_dict()),
                          "metrics": MetricRecord({"num-examples": len(x)}),
                          STREAM_RECORD: ConfigRecord({"stream-id": task.stream, "first-seq": first})})
    return Message(content=content, reply_to=msg)


def frames_apps(task: FramesTask, settings: TrainSettings, rounds: int, clients: int,
                record: str | Path) -> tuple[ServerApp, ClientApp, list[RecordingStrategy]]:
    """The Flower server and client apps; the list receives the strategy once the server has run."""
    client_app, server_app, used = ClientApp(), ServerApp(), []

    @client_app.train()
    def train(msg: Message, context: Context) -> Message:
        return local_training(task, msg, context)

    @server_app.main()
    def main(grid: Grid, context: Context) -> None:
        model = task.build()
        fedavg = FedAvg(fraction_train=1.0, fraction_evaluate=0.0, min_train_nodes=clients,
                        min_available_nodes=clients)
        strategy = RecordingStrategy(fedavg, record, model, settings)
        used.append(strategy)
        try:
            initial = ArrayRecord(learning.trained_module(model).state_dict())
            strategy.start(grid=grid, initial_arrays=initial, num_rounds=rounds)
        finally:
            strategy.close()

    return server_app, client_app, used


def run_frames_simulation(task: FramesTask, settings: TrainSettings, rounds: int, clients: int,
                          record: str | Path) -> RecordingStrategy:
    """Run the federation in Flower's simulation engine (one CPU per client); the strategy that ran."""
    server_app, client_app, used = frames_apps(task, settings, rounds, clients, record)
    run_simulation(server_app=server_app, client_app=client_app, num_supernodes=clients,
                   backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0}})
    if not used:
        raise RuntimeError("the Flower server app did not run")
    return used[0]
