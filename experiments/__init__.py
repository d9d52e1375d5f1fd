"""The experimenter: `splitleak run` takes the product of an experiment's axes and, per cell, drives
the three actors (a cloud and an edge as processes, the adversary's runner on the recording)."""
