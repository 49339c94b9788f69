"""Trains a reference model on the synthetic shapes task and writes its safetensors checkpoint.

    python3 -m elfatt_deploy.reference_models.train --model elfatt_vit_micro
    python3 -m elfatt_deploy.reference_models.train --model elfatt_cswin_micro

Deterministic: the training images are split seed 0 (``data.synthetic``), the weights and
the batch order come from ``--seed``, and it runs on ``--threads`` CPU threads (1 by default,
what the shipped checkpoints used: on a machine shared with other work one thread wastes no CPU
time spinning; the same thread count gives the same weights). It prints the held-out top-1 (split seed 1) and the wall
and CPU time (user+sys), and records them, with the settings, in the checkpoint's metadata.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import sys
import time
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from ..preprocess import DEFAULT_NORMALIZATION
from ..data.synthetic import CLASSES, HELD_OUT_SEED, TRAIN_SEED, render_batch
from . import PACKAGE_DIR, get_reference


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def render_split(count: int, seed: int, size: int, batch: int = 500) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalized images [count, 3, size, size] and labels of split ``seed``."""
    from tqdm import tqdm

    xs, ys = [], []
    for start in tqdm(range(0, count, batch), desc=f"render split {seed}", unit="batch", file=sys.stderr,
                      disable=None, leave=False):
        images, labels = render_batch(range(start, min(count, start + batch)), seed=seed, size=size)
        xs.append(torch.from_numpy(DEFAULT_NORMALIZATION.apply(images)))
        ys.append(torch.from_numpy(labels))
    return torch.cat(xs), torch.cat(ys)


@torch.inference_mode()
def evaluate(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, batch: int = 250) -> float:
    """Top-1 accuracy of ``model`` on the given images."""
    model.eval()
    correct = 0
    for start in range(0, len(images), batch):
        correct += int((model(images[start:start + batch]).argmax(1) == labels[start:start + batch]).sum())
    return correct / max(1, len(images))


def train(name: str, *, output: Path, steps: Optional[int] = None, batch: Optional[int] = None,
          lr: Optional[float] = None, train_images: Optional[int] = None, held_out_images: int = 1000,
          seed: int = 0, threads: Optional[int] = None, log=print) -> dict:
    from safetensors.torch import save_file
    from tqdm import tqdm

    from ..atomic import atomic_output
    from ..models import create_model

    ref = get_reference(name)
    steps = steps or ref.steps
    batch = batch or ref.batch
    lr = lr or ref.lr
    train_images = train_images or ref.train_images
    threads = threads or ref.threads
    torch.set_num_threads(threads)
    wall0, cpu0 = time.perf_counter(), cpu_seconds()
    x_train, y_train = render_split(train_images, TRAIN_SEED, ref.image_size)
    x_test, y_test = render_split(held_out_images, HELD_OUT_SEED, ref.image_size)
    render_wall, render_cpu = time.perf_counter() - wall0, cpu_seconds() - cpu0

    torch.manual_seed(seed)
    model = create_model(name)
    generator = torch.Generator().manual_seed(seed)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "pos_embed" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "pos_embed" not in n)]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05}, {"params": no_decay, "weight_decay": 0.0}],
                                  lr=lr, betas=(0.9, 0.999))
    warmup = max(1, steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / steps))))
    model.train()
    order = torch.randperm(train_images, generator=generator)
    cursor = 0
    bar = tqdm(range(steps), desc=f"train {name}", unit="step", file=sys.stderr, disable=None)
    for step in bar:
        if cursor + batch > train_images:
            order, cursor = torch.randperm(train_images, generator=generator), 0
        idx = order[cursor:cursor + batch]
        cursor += batch
        x, y = x_train[idx], y_train[idx]
        # flips keep every class (horizontal stripes stay horizontal under both)
        flip_w = torch.rand(len(idx), generator=generator) < 0.5
        flip_h = torch.rand(len(idx), generator=generator) < 0.5
        x = torch.where(flip_w[:, None, None, None], x.flip(-1), x)
        x = torch.where(flip_h[:, None, None, None], x.flip(-2), x)
        loss = F.cross_entropy(model(x), y, label_smoothing=0.1)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        if step % 50 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
    bar.close()
    train_wall = time.perf_counter() - wall0 - render_wall
    train_cpu = cpu_seconds() - cpu0 - render_cpu
    accuracy = evaluate(model, x_test, y_test)
    total_wall, total_cpu = time.perf_counter() - wall0, cpu_seconds() - cpu0
    report = {
        "model": name, "task": "elfatt_deploy.data.synthetic", "classes": list(CLASSES), "image_size": ref.image_size,
        "train_split_seed": TRAIN_SEED, "train_images": train_images, "held_out_split_seed": HELD_OUT_SEED,
        "held_out_images": held_out_images, "held_out_top1": accuracy, "steps": steps, "batch": batch, "lr": lr,
        "seed": seed, "threads": threads, "torch": torch.__version__,
        "wall_s": round(total_wall, 1), "cpu_s": round(total_cpu, 1),
        "render_wall_s": round(render_wall, 1), "render_cpu_s": round(render_cpu, 1),
        "train_wall_s": round(train_wall, 1), "train_cpu_s": round(train_cpu, 1),
    }
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    with atomic_output(output) as tmp:
        save_file(state, str(tmp), metadata={"elfatt.training": json.dumps(report, sort_keys=True)})
    log(f"{name}: held-out top-1 {accuracy:.4f} ({held_out_images} images, split seed {HELD_OUT_SEED}); "
        f"wall {total_wall:.0f} s, CPU {total_cpu:.0f} s user+sys ({total_cpu / 60:.1f} core-minutes) "
        f"on {threads} threads; wrote {output}")
    return report


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m elfatt_deploy.reference_models.train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="reference model name (elfatt_vit_micro, elfatt_cswin_micro)")
    parser.add_argument("-o", "--output", help="checkpoint to write (default: the shipped one in the package)")
    parser.add_argument("--steps", type=int, help="optimizer steps (default: the documented run's)")
    parser.add_argument("--batch", type=int, help="batch size")
    parser.add_argument("--lr", type=float, help="peak learning rate")
    parser.add_argument("--train-images", type=int, help="training images rendered (split seed 0)")
    parser.add_argument("--held-out-images", type=int, default=1000, help="held-out images (split seed 1)")
    parser.add_argument("--seed", type=int, default=0, help="weights and batch-order seed")
    parser.add_argument("--threads", type=int, help="CPU threads (default: the documented run's, 1; results are "
                                                    "reproducible at the same thread count)")
    parser.add_argument("--min-top1", type=float, default=0.9, help="exit 1 below this held-out top-1 (default 0.9)")
    args = parser.parse_args(argv)
    try:
        ref = get_reference(args.model)
    except ValueError as exc:
        parser.error(str(exc))
    output = Path(args.output) if args.output else PACKAGE_DIR / ref.checkpoint
    report = train(args.model, output=output, steps=args.steps, batch=args.batch, lr=args.lr,
                   train_images=args.train_images, held_out_images=args.held_out_images, seed=args.seed,
                   threads=args.threads)
    print(json.dumps(report, indent=2))
    return 0 if report["held_out_top1"] >= args.min_top1 else 1


if __name__ == "__main__":
    sys.exit(main())
