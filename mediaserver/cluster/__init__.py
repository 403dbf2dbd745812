"""How a node's media workers run and are reached.

Worker side: `supervisor` (starts and restarts worker processes), `worker_process` (one worker's entry point),
`worker_rpc` (its internal RPC server). Front side: `worker_client` (the protocols the front uses, and the
in-process client), `remote_worker` (the same over the RPC), `placement` and `hashring` (which worker holds
which camera), `registry_sync` (registry deltas to the owning workers).
"""
