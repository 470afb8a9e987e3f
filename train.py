"""Train a model: python train.py --config=configs/<model>.py:<preset> --workdir=DIR [--config.x=y]."""
from absl import app

from mmfuse_jax import cli


def main(argv):
    del argv
    from mmfuse_jax.training import loop

    config, workdir = cli.CONFIG.value, cli.WORKDIR.value
    cli.run_user_facing(lambda: print(loop.train_and_evaluate(config, workdir)))


if __name__ == "__main__":
    app.run(main)
