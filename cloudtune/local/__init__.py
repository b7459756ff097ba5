"""The local launcher: a job on this machine, in a faithful copy of one cloud's container contract (app layer)."""
