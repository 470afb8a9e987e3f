"""Evaluate the best checkpoint of a run on dev and test: python eval.py --config=... --workdir=DIR."""
from absl import app

from mmfuse_jax import cli


def main(argv):
    del argv
    from mmfuse_jax.training import loop

    config, workdir = cli.CONFIG.value, cli.WORKDIR.value

    def run():
        results = loop.evaluate(config, workdir)
        print(loop.format_table(results, f"{config.model_name} on {config.dataset.name} (x100)"))

    cli.run_user_facing(run)


if __name__ == "__main__":
    app.run(main)
