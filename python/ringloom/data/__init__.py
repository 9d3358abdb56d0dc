"""Data: tokenizers, token shards (memory-mapped), corpus discovery and distributed sampling."""
from .corpus import (PreparedData, default_cache_dir, find_text_files, prepare_data,
                     prepare_dataset, stdlib_files)
from .loader import TokenLoader, ValLoader, local_rows, split_micro_batches
from .shards import read_header, read_shard, write_shard
from .tokenizer import (BPETokenizer, ByteTokenizer, build_tokenizer, load_tokenizer)

__all__ = [
    "ByteTokenizer", "BPETokenizer", "load_tokenizer", "build_tokenizer",
    "write_shard", "read_shard", "read_header",
    "stdlib_files", "find_text_files", "prepare_data", "prepare_dataset", "PreparedData",
    "default_cache_dir",
    "TokenLoader", "ValLoader", "local_rows", "split_micro_batches",
]
