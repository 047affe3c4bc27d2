"""The training entry points, ``train_teacher.py`` and ``train_f2d2.py``.

Run them as files (``accelerate launch training/train_f2d2.py ...``); with the repository root on the path they also
import as modules (``from training import train_f2d2``). What they share lives in ``f2d2_diffusers.training``.
"""
