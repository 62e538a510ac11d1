"""The general-capability set shipped with the project (general.jsonl, written by
generate.py), added to a team as a dataset like any task set (services), and the forgetting
check that reads it: a fine-tuned subject against its base model (forgetting)."""
