"""Training: TrainConfig, the one training loop, optimizer and schedules, distributed runs, corpora and
token shards, language-model training, run directories and logs, the best checkpoint and early stopping,
reporters (TensorBoard, W&B), evaluation, the quick start.

May import `gptkit.generation`, `gptkit.models`, `gptkit.text` and the ground floor, nothing higher.
"""
