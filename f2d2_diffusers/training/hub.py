"""``--push_to_hub``: the run's output folder uploaded at the end of training."""

import logging
from pathlib import Path

from .cli import TrainingError

logger = logging.getLogger("f2d2_training")


def push_to_hub(args, commit_message: str) -> None:
    """Upload ``output_dir`` (without checkpoints and logs) to ``--hub_model_id``; only called with ``--push_to_hub``."""
    from ..hub import push_checkpoint

    repo_id = args.hub_model_id or Path(args.output_dir).resolve().name
    try:
        repo_id = push_checkpoint(args.output_dir, repo_id, token=args.hub_token, private=args.hub_private_repo,
                                  commit_message=commit_message)
    except Exception as err:  # noqa: BLE001  (network, auth: report, the trained model stays on disk)
        raise TrainingError(f"--push_to_hub: upload to {repo_id} failed ({type(err).__name__}: {err}); "
                            f"the model is saved in {args.output_dir}") from None
    logger.info(f"pushed {args.output_dir} to https://huggingface.co/{repo_id}")
