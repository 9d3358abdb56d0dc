"""Reading and writing weights: safetensors files written atomically, and training
checkpoints (manager.py: directories with a checksummed manifest)."""
from .atomic import atomic_write_bytes, atomic_write_text
from .manager import (CheckpointError, latest_complete, list_step_dirs, open_checkpoint, resolve_resume,
                      save_checkpoint)
from .safetensors import load_safetensors, save_safetensors

__all__ = ["save_safetensors", "load_safetensors", "atomic_write_bytes", "atomic_write_text", "CheckpointError",
           "open_checkpoint", "latest_complete", "list_step_dirs", "resolve_resume", "save_checkpoint"]
