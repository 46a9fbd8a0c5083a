"""Tasks: the on-disk format, prompting through chat templates, scoring and the training loss."""

from lora_recycle.tasks.format import Example, Task, TaskSpec, load_task, write_task

__all__ = ["Example", "Task", "TaskSpec", "load_task", "write_task"]
