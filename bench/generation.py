"""Batched generation against one prompt at a time through plain `generate`, on the
embedded SmolLM2-135M-Instruct and the demo eval prompts: tokens/s and identical greedy output.

    python bench/generation.py --prompts 48 --max-new-tokens 32 --batch-size 16
"""

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "finetune_hub.settings")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--prompts", type=int, default=48)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()

    import django

    django.setup()
    import torch

    from datasets_app import formats
    from finetune_hub.management.commands.demo_data import DEMO_FILE
    from inference import generation

    model, tokenizer = generation.load("embedded")
    rows = [json.loads(line) for line in DEMO_FILE.read_text().splitlines()[: args.prompts]]
    prompts = [
        formats.prompt_text("instruction", formats.normalise("instruction", r), tokenizer)[0]
        for r in rows
    ]

    def one_at_a_time():
        answers, tokens, started = [], 0, time.perf_counter()
        for prompt in prompts:
            inputs = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
            with torch.no_grad():
                out = model.generate(
                    **inputs,
                    max_new_tokens=args.max_new_tokens,
                    do_sample=False,
                    pad_token_id=tokenizer.pad_token_id,
                )
            new = out[0, inputs["input_ids"].shape[1] :]
            tokens += len(new)
            answers.append(tokenizer.decode(new, skip_special_tokens=True).strip())
        return answers, tokens, time.perf_counter() - started

    single, single_tokens, single_s = one_at_a_time()
    batched, batched_tokens, batched_s = generation.generate(
        model, tokenizer, prompts, max_new_tokens=args.max_new_tokens, batch_size=args.batch_size
    )
    same = sum(a == b for a, b in zip(single, batched, strict=True))
    speedup = (batched_tokens / batched_s) / (single_tokens / single_s)
    print(
        f"\n{' '.join(sys.argv)}  on {platform.machine()}, {os.cpu_count()} cores, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads\n"
    )
    print("| path | prompts | new tokens | seconds | tokens/s |")
    print("| --- | --- | --- | --- | --- |")
    print(
        f"| one at a time (plain generate) | {len(prompts)} | {single_tokens} | {single_s:.1f} "
        f"| {single_tokens / single_s:.1f} |"
    )
    print(
        f"| batched {args.batch_size}, sorted by length | {len(prompts)} | {batched_tokens} "
        f"| {batched_s:.1f} | {batched_tokens / batched_s:.1f} |"
    )
    print(f"\nspeed-up {speedup:.2f}x; identical greedy outputs: {same} of {len(prompts)}")


if __name__ == "__main__":
    main()
