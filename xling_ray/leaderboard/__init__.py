"""Transfer-gap metrics and the leaderboard built from a run folder."""
from xling_ray.metrics import summarize, transfer_gap
from xling_ray.leaderboard.table import build_leaderboard, format_leaderboard, read_leaderboard, write_leaderboard

__all__ = ["build_leaderboard", "format_leaderboard", "read_leaderboard", "summarize", "transfer_gap", "write_leaderboard"]
