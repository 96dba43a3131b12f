"""What pruning buys: every pruned model realised (compacted, or CSR where faster) and timed."""

from __future__ import annotations

from prunelab import paths
from prunelab.runtime.declare import Plot, Stage, Study

STUDY = Study(
    name="speed",
    description="parameters, bytes, FLOPs and measured CPU latency of the pruned models",
    figure=paths.TRADEOFF_FIGURE,
    report_section="What pruning buys: speed and size",
    stages=(Stage("speed", "realise every pruned model (compacted / CSR) and time it",
                  "stages/speed.py",
                  params=("data.train_size", "data.test_size", "prune.sparsities",
                          "prune.weight_criteria", "prune.unit_criteria",
                          "prune.calibration_size"),
                  reads=(paths.model(paths.FIRST_SEED), paths.DATA_DIR),
                  outs=(paths.SPEED_CURVE,), details=(paths.SPEED_METRICS,),
                  figures=(paths.TRADEOFF_FIGURE,),
                  note="The reconstructing criteria (obs, l2_refit) are realised too, hence the\n"
                       "criteria lists."),),
    plots=(Plot("accuracy_vs_speedup", "speedup_tradeoff",
                "Accuracy against measured speed-up (batch 100), by method and scope",
                "speedup_b100", {str(paths.SPEED_CURVE): "accuracy"},
                "speed-up over the dense net, batch 100 (log scale)", "test accuracy (%)",
                in_git=True),),  # timings: no rerun reproduces HEAD's copy
)
