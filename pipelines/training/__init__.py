"""Training and evaluating heads on cached features.

`loop` (the one training loop: configs, epochs, validation, selection), `run_folder` (the run
folder's layout and files: config.json, data_info.json, metrics.json, checkpoints with their RNG
states, the lock), `checkpoint` (the checkpoint file format: safetensors + JSON, no pickle),
`evaluate` (`lighthead evaluate RUN`: rebuild a run's head and score it through its task),
`curves` (curves.png from the history), `live_log` (TensorBoard while training).
"""
