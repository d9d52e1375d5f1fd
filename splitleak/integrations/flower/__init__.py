"""Flower (flwr) integration: a strategy wrapper that records what a Flower server sees.

`RecordingStrategy` wraps any message-API strategy (`flwr.serverapp.strategy`): every round's
global model becomes a "state" item and every client's training reply an "update" item (the
weight delta, mode fedavg) of a splitleak recording, in the format the cloud's recorder writes,
so `splitleak attack` runs on the updates of a real Flower app. Needs `pip install -e '.[flower]'`.
"""

from splitleak.integrations.flower.strategy import RecordingStrategy, TrainSettings

__all__ = ["RecordingStrategy", "TrainSettings"]
