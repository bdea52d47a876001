"""The CLI layer: commands that compose the whole system (the composition root).

`infra/cli.py` lists every command lazily; the ones here wire producers, stream agents and training
together, which no lower package may do (tests/test_layout.py):

- `demo.py`: `donorcast demo`, services + a model + a worker + replayed chat, on one machine;
- `worker.py`: `donorcast worker --workers N`, the services and N supervised worker processes.

Worker processes are started by `infra.workers.spawn_worker` (also used by the bench and the tests).
"""
