"""A run: the stage graph (``graph``) and the work of each stage (``stages``), the order they run in
(``orchestrate``), the run folder (``outdir``), seeds (``seeds``) and provenance (``provenance``)."""

from uqbench.run.graph import STAGES
from uqbench.run.orchestrate import predict_only, run, stored_volumes
from uqbench.run.outdir import check_out

__all__ = ["STAGES", "check_out", "predict_only", "run", "stored_volumes"]
