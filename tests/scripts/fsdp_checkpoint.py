"""Run by tests/test_train.py under `accelerate launch --use_fsdp --num_processes 2` on CPU: a sharded
model and its optimiser are saved with accelerate's save_state (bfpo.sharding.ShardedState), loaded
into a differently initialised model, and both continue with the same losses."""

import json
import sys

import torch
from accelerate import Accelerator
from transformers import LlamaConfig, LlamaForCausalLM

from bfpo import sharding


def sharded_model(seed, accelerator):
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        tie_word_embeddings=True,
    )
    model = sharding.shard(LlamaForCausalLM(config))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    accelerator._custom_objects.clear()
    accelerator.register_for_checkpointing(sharding.ShardedState(model, optimizer))
    return model, optimizer


def steps(model, optimizer, n, rank):
    losses = []
    for step in range(n):
        x = torch.randint(0, 64, (2, 12), generator=torch.Generator().manual_seed(100 * step + rank))
        loss = model(input_ids=x, labels=x).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(float(loss.detach()))
    return losses


accelerator = Accelerator()
rank, folder = accelerator.process_index, sys.argv[1]
model, optimizer = sharded_model(0, accelerator)
steps(model, optimizer, 3, rank)
accelerator.save_state(folder)
straight = steps(model, optimizer, 3, rank)
model, optimizer = sharded_model(1, accelerator)  # other weights, fresh optimiser
accelerator.load_state(folder)
resumed = steps(model, optimizer, 3, rank)
held, total = sharding.local_parameters(model)
with open(f"{folder}/result{rank}.json", "w") as f:
    json.dump({"straight": straight, "resumed": resumed, "held": held, "total": total}, f)
