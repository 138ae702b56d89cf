"""A Ray cluster of two nodes (a head and a second node, each with its own raylet and object
store) on this machine, for the multi-node tests: ``python -m tests.integration.local_cluster``
prints the cluster's address, then keeps the cluster up until its stdin closes.

It runs in its own process with ``RAY_TMPDIR`` pointing at a private folder, so the cluster's
sessions and its address file stay out of ``/tmp/ray``: another ``ray.init()`` on this machine
(a test session, another user's job) keeps starting its own local Ray instead of joining this
cluster. On exit it removes exactly the processes it started.
"""

from __future__ import annotations

import argparse
import sys

MB = 2**20


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cpus-per-node", type=int, default=3)
    parser.add_argument("--object-store-mb", type=int, default=200)
    args = parser.parse_args()
    from ray.cluster_utils import Cluster

    node = {
        "num_cpus": args.cpus_per_node,
        "object_store_memory": args.object_store_mb * MB,
        "include_dashboard": False,
    }
    cluster = Cluster(initialize_head=True, head_node_args=dict(node))
    try:
        cluster.add_node(**node)
        cluster.wait_for_nodes(timeout=60)
        print(cluster.address, flush=True)
        sys.stdin.read()  # until the test closes our stdin
    finally:
        cluster.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
