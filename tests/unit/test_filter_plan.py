from quartz_cluster import limits
from quartz_cluster.node.filter_plan import EXACT, GRAPH, filter_plan


def test_selective_filters_brute_force_broad_ones_walk_the_graph():
    live = 20_000
    assert filter_plan(0, live) == EXACT
    assert filter_plan(int(0.05 * live), live) == EXACT  # the graph would step over 19 of 20 points
    assert filter_plan(int(0.76 * live), live) == GRAPH  # 15k candidates: brute force is 20x slower
    edge = int(limits.GRAPH_FILTER_SELECTIVITY_MIN * live)
    assert filter_plan(edge - 1, live) == EXACT and filter_plan(edge, live) == GRAPH


def test_brute_force_stays_bounded_however_small_the_share():
    live = 10_000_000
    assert filter_plan(limits.EXACT_SEARCH_CANDIDATES_MAX, live) == EXACT
    assert filter_plan(limits.EXACT_SEARCH_CANDIDATES_MAX + 1, live) == GRAPH


def test_a_tiny_shard_brute_forces_only_selective_filters():
    assert filter_plan(3, 10) == GRAPH
    assert filter_plan(1, 10) == EXACT
