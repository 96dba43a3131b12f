"""The dense nets every study starts from: params checked, MNIST fetched, one net per seed."""

from __future__ import annotations

from prunelab import paths
from prunelab.runtime.declare import Plot, Stage, Study

ITEM = paths.ITEM
# An architecture's settings rerun training even when the other one is chosen: DVC tracks
# keys, not which one is used.
TRAIN_PARAMS = ("data.train_size", "data.test_size", "model.arch", "model.mlp.hidden",
                "model.lenet5.channels", "model.lenet5.fc", "model.resnet.widths",
                "model.resnet.blocks", "model.lstm.hidden", "train.epochs", "train.lr",
                "train.batch_size", "train.device")

STUDY = Study(
    name="dense",
    description="validate params.yaml, fetch MNIST, train one net per seed",
    stages=(
        Stage("validate", "check the whole params.yaml before any stage touches an output",
              "stages/validate.py", params=("params.yaml:",),
              in_git=(paths.PARAMS_CHECKED,), persist=(paths.PARAMS_CHECKED,),
              note="DVC deletes a stage's outputs before running it, so a bad value must be\n"
                   "caught upstream of every stage: validate depends on the whole file; its\n"
                   "output is constant and persist, so it orders the pipeline, never reruns it."),
        Stage("download", "MNIST's four IDX files, verified against the official MD5s",
              "stages/download.py", reads=(paths.PARAMS_CHECKED,), outs=(paths.DATA_DIR,)),
        Stage("train", "train one seed's net (model.arch: the study's MLP, LeNet-5, a ResNet or an "
              "LSTM)",
              "stages/train.py", args=(ITEM,), params=TRAIN_PARAMS, reads=(paths.DATA_DIR,),
              outs=(paths.model(ITEM), paths.init_model(ITEM), paths.train_run(ITEM),
                    paths.train_loss(ITEM)),
              details=(paths.train_metrics(ITEM), paths.train_timing(ITEM)), per_seed=True,
              note="Replicates: once per seed of train.seeds, into models|metrics|plots/seeds/\n"
                   "<seed>/. The seed is in the command, not in params, so adding a seed runs\n"
                   "only the new seed's stages."),
    ),
    plots=(Plot("train_loss", "loss_curve", f"Training loss per step (seed {ITEM})", "step",
                {str(paths.train_loss(ITEM)): "loss"}, "optimiser step",
                "training loss (cross-entropy)", in_git=True),),
)
