"""Training: batches -> one step -> the loop -> the session it reports to."""
from xling_ray.train.loop import NonFiniteLossError, run_recipe, train_loop_per_worker
from xling_ray.train.session import LocalSession, Session, TrainSession, TuneSession
from xling_ray.train.step import StepResult, training_step

__all__ = ["LocalSession", "NonFiniteLossError", "Session", "StepResult", "TrainSession", "TuneSession",
           "run_recipe", "train_loop_per_worker", "training_step"]
