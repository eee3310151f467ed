"""The REMI reference code (public repo Tokkiu/REMI, PyTorch) trained on a split prepared by `remi prepare`.

    python benchmarks/reference_remi.py --data runs/bench/ml-1m --reference /tmp/remi-ref \
        --python /tmp/torchenv/bin/python --output runs/reference-ml-1m --seq-len 50 \
        [--max-iter 10] [--seed 2021] [--interests 4]

Writes the prepared train/valid/test users in the reference's text layout (`user,item,time` lines, items
numbered from 1 in the order of items.tsv, time = position in the history), copies the reference's `src/`
with changes that alter no result: the CPU (faiss's `IndexFlatIP` for `GpuIndexFlatIP`, no `.cuda()`), no time and
adjacency matrices (only other models of that repo read them; they made its data loader the bottleneck),
and a data set entry for this split. Then it runs the reference's own setting (REMI: d 64, K 4, batch 128,
1,280 uniform negatives, beta 10, lambda 100, Adam 1e-3, valid Recall@50 every 1,000 iterations) and writes
its test metrics to <output>/reference.json. The reference evaluates as remi-tf's user split: the first 80%
of each held-out user's history, the rest as targets.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess

import remi_tf  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow)
from remi_tf.atomic import write_json
from remi_tf.input import load_sequences, read_vocabulary
from remi_tf.item_index import FIRST_ITEM_INDEX

DATASET = "remitf"


def write_layout(data_dir: str, out_dir: str) -> int:
    """Writes remitf_{train,valid,test}.txt; returns the number of items (ids 1 .. N; 0 is padding)."""
    vocabulary = read_vocabulary(data_dir)
    user_number = 0
    for split in ("train", "valid", "test"):
        _, sequences = load_sequences(data_dir, split, vocabulary)
        with open(os.path.join(out_dir, f"{DATASET}_{split}.txt"), "w", encoding="utf-8") as stream:
            for items in sequences:
                user_number += 1
                for position, index in enumerate(items - FIRST_ITEM_INDEX + 1):
                    stream.write(f"{user_number},{index},{position}\n")
    return len(vocabulary)


def patch_source(reference: str, out_dir: str, num_items: int, seq_len: int) -> str:
    """Copies the reference's src/ into out_dir with the documented changes; returns the copy's path."""
    source = os.path.join(out_dir, "src")
    shutil.rmtree(source, ignore_errors=True)
    shutil.copytree(os.path.join(reference, "src"), source)

    def edit(name: str, old: str, new: str) -> None:
        path = os.path.join(source, name)
        with open(path, encoding="utf-8") as stream:
            text = stream.read()
        if old not in text:
            raise ValueError(f"{path}: expected to find {old!r}; is this the Tokkiu/REMI code?")
        with open(path, "w", encoding="utf-8") as stream:
            stream.write(text.replace(old, new))

    edit("evalution.py", "gpu_indexs[0] = faiss.GpuIndexFlatIP(res, hidden_size, flat_config)",
         "gpu_indexs[0] = faiss.IndexFlatIP(hidden_size)")
    edit("BasicModel.py", "torch.Tensor([1.0] * number).cuda()", "torch.Tensor([1.0] * number)")
    edit("evalution.py", "res = faiss.StandardGpuResources()", "pass")
    edit("evalution.py", "flat_config = faiss.GpuIndexFlatConfig()", "pass")
    edit("evalution.py", "flat_config.device = device.index", "pass")
    for matrix in ("compute_time_matrix(self, time_seq, item_num):", "compute_adj_matrix(self, mask_seq, item_num):"):
        edit("utils.py", f"def {matrix}", f"def {matrix}\n        return 0")
    edit("train.py", "    train_file = path + args.dataset + '_train.txt'",
         f"    if args.dataset == '{DATASET}':\n        path = {out_dir + '/'!r}\n"
         f"        item_count = {num_items} + 1\n        batch_size = 128\n        seq_len = {seq_len}\n"
         f"        test_iter = 1000\n    train_file = path + args.dataset + '_train.txt'")
    return source


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True, help="a data directory written by `remi prepare`")
    parser.add_argument("--reference", required=True, help="a checkout of Tokkiu/REMI")
    parser.add_argument("--python", required=True, help="a Python with torch, numpy and faiss-cpu")
    parser.add_argument("--output", required=True)
    parser.add_argument("--seq-len", type=int, default=20)
    parser.add_argument("--max-iter", type=int, default=10, help="thousands of training iterations")
    parser.add_argument("--seed", type=int, default=2021, help="the reference's --random_seed")
    parser.add_argument("--interests", type=int, default=4, help="K, the reference's --interest_num")
    args = parser.parse_args()
    out_dir = os.path.abspath(args.output)
    os.makedirs(out_dir, exist_ok=True)
    source = patch_source(args.reference, out_dir, write_layout(args.data, out_dir), args.seq_len)
    command = [args.python, os.path.join(source, "train.py"), "--gpu", "", "--model_type", "REMI", "--dataset", DATASET,
               "--rbeta", "10", "--rlambda", "100", "--interest_num", str(args.interests), "--hidden_size", "64",
               "--learning_rate", "0.001", "--max_iter", str(args.max_iter), "--random_seed", str(args.seed),
               "--exp", f"s{args.seed}"]
    log_path = os.path.join(out_dir, "train.log")
    with open(log_path, "w", encoding="utf-8") as log:
        status = subprocess.run(command, cwd=out_dir, stdout=log, stderr=subprocess.STDOUT, timeout=4 * 3600).returncode
    if status:
        raise SystemExit(f"the reference code exited with status {status}; its output: {log_path}")
    with open(log_path, encoding="utf-8") as log:
        metrics = {f"{name}@{k}": float(value)
                   for name, k, value in re.findall(r"^test (\w+)@(\d+)=([0-9.]+)$", log.read(), re.M)}
    result = {"command": command, "seq_len": args.seq_len, "interests": args.interests, "seed": args.seed,
              "test": metrics}
    write_json(os.path.join(out_dir, "reference.json"), result)
    print(json.dumps(metrics, indent=2))


if __name__ == "__main__":
    main()
