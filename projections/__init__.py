"""The read side: projectors (one module per read model), the engine that applies the log to them,
and the operations on them (status, rebuild and replay, verify, dead letters), each in its module."""
