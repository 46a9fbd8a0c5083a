"""lora-recycle: recycle LoRA adapters with adaptive merging."""

__version__ = "0.1.0"
