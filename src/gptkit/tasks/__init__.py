"""Tasks: fine-tuning for classification, tagging, QA, multiple choice and instructions: TaskConfig, the
data readers, heads over the GPT, the recipes, metrics, `finetune` and prediction.

May import `gptkit.training`, `gptkit.generation`, `gptkit.models`, `gptkit.text` and the ground floor.
"""
