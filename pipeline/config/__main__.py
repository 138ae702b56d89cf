"""``python -m pipeline.config``: print the params.yaml skeleton (every key, null = inherit)."""

import yaml

from pipeline.config.load import params_template

HEADER = """\
# Pipeline parameters, tracked by DVC. `profile` selects a preset in conf/profiles/
# (ci | mini | released | paper). Every other key is null = "use the profile's value"; set one
# to override it. Examples:
#   dvc exp run -S profile=ci
#   dvc exp run -S shard.num_samples=5000 -S pretrain_base.lr=3e-4
# Keys and types: pipeline/config/schema.py. Regenerate: python -m pipeline.config > params.yaml
"""

if __name__ == "__main__":
    print(HEADER + yaml.safe_dump(params_template(), sort_keys=False), end="")
