"""Reading and writing weights: safetensors files written atomically."""
from .atomic import atomic_write_bytes, atomic_write_text
from .safetensors import load_safetensors, save_safetensors

__all__ = ["save_safetensors", "load_safetensors", "atomic_write_bytes", "atomic_write_text"]
