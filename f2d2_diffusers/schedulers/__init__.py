from .scheduling_f2d2 import F2D2Scheduler, F2D2SchedulerOutput

__all__ = ["F2D2Scheduler", "F2D2SchedulerOutput"]
